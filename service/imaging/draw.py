"""Overlays: the image with a task's results drawn on it (segmentation colours, face points, boxes).

Each function returns the encoded file (PNG or JPEG) so tasks can put it in their answer as is.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from service.imaging.encode import image_bytes
from service.imaging.palette import full_palette


def label_overlay(rgb: np.ndarray, labels: np.ndarray, palette: list[tuple[int, int, int]] | None,
                  *, alpha: float = 0.5, fmt: str = "jpeg") -> bytes:
    """The image blended with the label colours: ``(1 - alpha) * image + alpha * colour``."""
    colours = full_palette(palette)[np.clip(labels, 0, 255)]
    a = np.float32(alpha)
    blend = rgb.astype(np.float32) * (1 - a) + colours.astype(np.float32) * a
    return image_bytes(np.clip(np.rint(blend), 0, 255).astype(np.uint8), fmt)


def landmarks_overlay(rgb: np.ndarray, squares: Iterable[Sequence[float]],
                      points: Iterable[np.ndarray], *, fmt: str = "jpeg") -> bytes:
    """The image with each face's crop square (outline) and its landmarks (dots) drawn."""
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    r = max(1.0, min(rgb.shape[:2]) / 200.0)
    for square, pts in zip(squares, points):
        draw.rectangle(list(square), outline=(0, 255, 0), width=max(1, int(r)))
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    return image_bytes(im, fmt)


def boxes_overlay(rgb: np.ndarray, boxes: Iterable[tuple[Sequence[float], str]], *,
                  fmt: str = "jpeg") -> bytes:
    """The image with each ``(box, caption)`` drawn as a rectangle with its caption."""
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    for (x1, y1, x2, y2), caption in boxes:
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
        draw.text((x1 + 2, y1 + 2), caption, fill=(255, 255, 0))
    return image_bytes(im, fmt)


def faces_overlay(rgb: np.ndarray, faces: Iterable[tuple[Sequence[float], str]],
                  points: Iterable[np.ndarray] = (), *, fmt: str = "jpeg") -> bytes:
    """The image with each face's ``(box, caption)`` (a detector's box and score) and, per face,
    its points (detector keypoints or landmarks) as dots: the ``/faces`` overlay, and
    ``/landmarks``' when the faces were detected."""
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    r = max(1.0, min(rgb.shape[:2]) / 200.0)
    width = max(2, int(r))
    for (x1, y1, x2, y2), caption in faces:
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=width)
        draw.text((x1 + 2, y1 + 2), caption, fill=(255, 255, 0))
    for pts in points:
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    return image_bytes(im, fmt)
