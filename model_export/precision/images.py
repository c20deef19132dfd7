"""The images that calibrate INT8 tiers and measure every tier, as graph inputs per task.

Calibration defaults to scikit-image sample photos that are *not* the parity photos (the tiers
are measured on those, so calibration and measurement never share an image); a user's folder
replaces them. Measurement always uses the parity photos, plus a user's folder when given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.contract import IMAGE, IMAGE_SIZE, rescale_size

from model_export.datasets import LANDMARK_INPUT_SIZE
from model_export.errors import ExportError
from model_export.onnx.photos import PARITY_PHOTOS, resize_rgb

#: scikit-image photos that calibrate by default (every one ships with the package).
CALIBRATION_PHOTOS: tuple[str, ...] = (
    "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "retina", "brick", "grass",
    "gravel", "colorwheel", "cell",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

Image = tuple[str, np.ndarray]  # (name, RGB uint8 H x W x 3)
Feed = dict[str, np.ndarray]  # graph inputs of one pass, batch of 1


def as_rgb(array: np.ndarray) -> np.ndarray:
    """Gray (also boolean), RGB or RGBA as contiguous RGB uint8."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def sample_photos(names: tuple[str, ...]) -> list[Image]:
    """scikit-image's photos ``names`` as RGB."""
    from skimage import data

    return [(n, as_rgb(getattr(data, n)())) for n in names]


def parity_photos() -> list[Image]:
    """The parity photos (what every tier is measured on)."""
    return sample_photos(PARITY_PHOTOS)


def folder_images(folder: str | Path, limit: int) -> list[Image]:
    """Up to ``limit`` images of ``folder`` (by name), as RGB; ExportError when it holds none."""
    from PIL import Image as PILImage

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    out: list[Image] = []
    for path in files:
        try:
            with PILImage.open(path) as im:
                out.append((path.name, as_rgb(np.asarray(im.convert("RGB")))))
        except Exception as exc:
            raise ExportError(f"cannot read image {path}: {exc}") from None
    if not out:
        raise ExportError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return out


def task_feeds(task: str, images: list[Image], sizes: list[tuple[int, int]]
               ) -> list[tuple[str, Feed]]:
    """Every image at every size as ``(label, graph inputs)``.

    Segmentation: resized to each (h, w). Landmarks: the whole image resized to the 256x256 face
    crop (``sizes`` ignored). Detection: resized within each (long, short) limit by the detection
    rule and padded bottom/right to a multiple of 32 with the mean pixel (the official padding),
    with its ``image_size``.
    """
    out: list[tuple[str, Feed]] = []
    if task == "landmarks":
        sizes = [LANDMARK_INPUT_SIZE]
    for size in sizes:
        for name, rgb in images:
            label = f"{name}@{size[0]}x{size[1]}"
            if task == "detection":
                from model_export.onnx.detection import letterbox

                nh, nw, _ = rescale_size(rgb.shape[0], rgb.shape[1], size)
                image, hw = letterbox(resize_rgb(rgb, (nh, nw)))
                out.append((label, {IMAGE: image, IMAGE_SIZE: hw}))
            else:
                x = resize_rgb(rgb, tuple(size)).transpose(2, 0, 1)[None]
                out.append((label, {IMAGE: np.ascontiguousarray(x, dtype=np.float32)}))
    return out
