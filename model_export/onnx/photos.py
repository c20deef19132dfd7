"""The real photographs that parity checks and the demo calibration run on, resized and batched.

They ship with scikit-image, so they load offline; real content (unlike noise) gives label maps
and heatmap peaks that vary across the image.
"""

from __future__ import annotations

import functools

import numpy as np

#: The photos of the HRNet parity check, in the order batches cycle through them.
PARITY_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """scikit-image's photo ``name`` as a read-only RGB uint8 ``[H, W, 3]`` array (cached)."""
    from skimage import data

    img = np.ascontiguousarray(np.asarray(getattr(data, name)())[..., :3])
    img.setflags(write=False)
    return img


def parity_images() -> list[tuple[str, np.ndarray]]:
    """The parity photos as ``(name, RGB uint8 image)`` pairs."""
    return [(name, photo(name)) for name in PARITY_PHOTOS]


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (h, w), returned as float32 pixels 0..255."""
    from PIL import Image

    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)


def pixel_batch(
    images: list[tuple[str, np.ndarray]], size: tuple[int, int], batch: int, offset: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``batch`` photos (cycling through ``images``) as an FP32 NCHW pixel batch."""
    picks = [images[(offset + i) % len(images)] for i in range(batch)]
    arr = np.stack([resize_rgb(img, size).transpose(2, 0, 1) for _, img in picks])
    return np.ascontiguousarray(arr, dtype=np.float32), [n for n, _ in picks]
