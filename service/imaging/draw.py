"""Overlays: the image with a task's results drawn on it (segmentation colours with a legend,
face boxes with connected landmark contours, detection boxes with captions).

Legibility rules shared by all three: one colour per class (the dataset's palette, else a fixed
table of well-separated colours), line widths and the font size grow with the image (Pillow's
built-in scalable font, ``ImageFont.load_default(size=...)``: no font files), and every text sits
on a filled background in its class colour with black or white letters, whichever contrasts more.

Each function returns the encoded file (PNG or JPEG) so tasks can put it in their answer as is.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.imaging.encode import class_counts, image_bytes
from service.imaging.palette import distinct_colour, full_palette

Colour = tuple[int, int, int]

#: Landmark groups whose points go round an area (drawn as closed contours).
CLOSED_GROUPS = re.compile(r"(eye|lip|mouth)$")
_NUMBERED = re.compile(r"^(.*?)_?(\d+)$")


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (scalable since Pillow 10.1; bitmap fallback)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_size(image_shape: Sequence[int]) -> int:
    """A readable font size for an image of ``(h, w, ...)``: 1/40 of the short side, 12..48 px."""
    return int(np.clip(min(image_shape[0], image_shape[1]) / 40, 12, 48))


def line_width(image_shape: Sequence[int]) -> int:
    """Outline width for an image of ``(h, w, ...)``: 1/300 of the short side, 2..8 px."""
    return int(np.clip(round(min(image_shape[0], image_shape[1]) / 300), 2, 8))


def text_colour(background: Colour) -> Colour:
    """Black or white, whichever contrasts more with ``background`` (relative luminance)."""
    r, g, b = (c / 255.0 for c in background)
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else (255, 255, 255)


def caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: Colour,
            fnt: ImageFont.FreeTypeFont | ImageFont.ImageFont, bounds: tuple[int, int]) -> None:
    """``text`` at ``xy`` (its top-left corner) on a filled ``colour`` box, kept inside
    ``bounds = (w, h)``."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=fnt)
    pad = max(2, (y1 - y0) // 5)
    w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    x = float(np.clip(xy[0], 0, max(0, bounds[0] - w)))
    y = float(np.clip(xy[1], 0, max(0, bounds[1] - h)))
    draw.rectangle([x, y, x + w, y + h], fill=colour)
    draw.text((x + pad - x0, y + pad - y0), text, fill=text_colour(colour), font=fnt)


def caption_height(draw: ImageDraw.ImageDraw, fnt: ImageFont.FreeTypeFont | ImageFont.ImageFont,
                   text: str = "Ag") -> int:
    """Height of :func:`caption`'s box for ``text``."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=fnt)
    return y1 - y0 + 2 * max(2, (y1 - y0) // 5)


def class_colours(n: int, palette: list[Colour] | None) -> list[Colour]:
    """``n`` class colours: the dataset's palette where it has one, else distinct colours."""
    if palette:
        pal = full_palette(palette)
        return [tuple(int(c) for c in pal[i % 256]) for i in range(n)]  # type: ignore[misc]
    return [distinct_colour(i) for i in range(n)]


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def legend(im: Image.Image, entries: Sequence[tuple[Colour, str]], *, max_rows: int = 12) -> None:
    """A legend box in the top-left corner: a colour swatch and a text per entry (the first
    ``max_rows``; a last row says how many more there are)."""
    if not entries:
        return
    draw = ImageDraw.Draw(im, "RGBA")
    fnt = font(text_size((im.height, im.width)))
    probe = draw.textbbox((0, 0), "Ag", font=fnt)
    # At most about half the image's height (small images get fewer rows).
    max_rows = max(2, min(max_rows, int(im.height * 0.5 // ((probe[3] - probe[1]) * 4 / 3)) - 1))
    shown = list(entries[:max_rows])
    rows = [text for _, text in shown]
    if len(entries) > max_rows:
        rows.append(f"+{len(entries) - max_rows} more")
    boxes = [draw.textbbox((0, 0), t, font=fnt) for t in rows]
    row_h = max(b[3] - b[1] for b in boxes)
    pad = max(3, row_h // 3)
    swatch = row_h
    width = swatch + pad + max(b[2] - b[0] for b in boxes) + 3 * pad
    height = len(rows) * (row_h + pad) + pad
    draw.rectangle([0, 0, width, height], fill=(0, 0, 0, 170))
    for k, text in enumerate(rows):
        y = pad + k * (row_h + pad)
        x = pad
        if k < len(shown):
            draw.rectangle([x, y, x + swatch, y + row_h], fill=shown[k][0], outline=(255, 255, 255))
        x0, y0, _, _ = boxes[k]
        draw.text((x + swatch + pad - x0, y - y0), text, fill=(255, 255, 255), font=fnt)


def label_overlay(rgb: np.ndarray, labels: np.ndarray, palette: list[Colour] | None,
                  *, alpha: float = 0.5, fmt: str = "jpeg", names: Sequence[str] | None = None,
                  with_legend: bool = True) -> bytes:
    """The image blended with the label colours, ``(1 - alpha) * image + alpha * colour``, and a
    legend of the classes present (largest first, with their share of the image)."""
    pal = full_palette(palette)
    colours = pal[np.clip(labels, 0, 255)]
    a = np.float32(alpha)
    blend = rgb.astype(np.float32) * (1 - a) + colours.astype(np.float32) * a
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    if not (with_legend and names):
        return image_bytes(out, fmt)
    counts = class_counts(labels, len(names))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    total = max(1, labels.size)
    entries = [(tuple(int(c) for c in pal[i % 256]),
                f"{names[i] if i < len(names) else i}  {100.0 * counts[i] / total:.1f}%")
               for i in present]
    im = Image.fromarray(out)
    legend(im, entries)  # type: ignore[arg-type]
    return image_bytes(im, fmt)


# --------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------


def point_groups(names: Sequence[str]) -> list[tuple[list[int], bool]]:
    """Contours of a landmark scheme from its names: consecutive points named ``<group>_<n>``
    (``jaw_1`` .. ``jaw_17``, ``right_eye_1`` ..) form one polyline, closed for groups that go
    round an area (eyes, lips). Points without a number stay single points (no line).

    Returns ``[(indices, closed), ...]`` for every group of two points or more.
    """
    groups: list[tuple[str, list[int]]] = []
    for i, name in enumerate(names):
        m = _NUMBERED.match(name)
        if m is None:
            continue
        key = m.group(1)
        if groups and groups[-1][0] == key and groups[-1][1][-1] == i - 1:
            groups[-1][1].append(i)
        else:
            groups.append((key, [i]))
    return [(idx, bool(CLOSED_GROUPS.search(key)) and len(idx) > 2)
            for key, idx in groups if len(idx) > 1]


def landmarks_overlay(rgb: np.ndarray, boxes: Iterable[Sequence[float] | None],
                      points: Iterable[np.ndarray], *, names: Sequence[str] = (),
                      fmt: str = "jpeg") -> bytes:
    """The image with each face's box (the one the client sent; None: no box is drawn), its
    landmark contours (:func:`point_groups`) and its points, each face numbered."""
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    shape = rgb.shape
    width = line_width(shape)
    fnt = font(text_size(shape))
    groups = point_groups(names)
    box_colour, line_colour, dot_colour = (0, 200, 255), (60, 255, 60), (255, 0, 0)
    for k, (box, pts) in enumerate(zip(boxes, points)):
        pts = np.asarray(pts, np.float64)
        if box is not None:
            x1, y1, x2, y2 = (float(v) for v in box)
            draw.rectangle([x1, y1, x2, y2], outline=box_colour, width=width)
            h = caption_height(draw, fnt)
            caption(draw, (x1, y1 - h if y1 - h >= 0 else y2), f"face {k}", box_colour, fnt,
                    (im.width, im.height))
        # Lines a little thinner than the box; dots sized to the face, at least 2 px.
        span = float(np.ptp(pts[:, 0])) if len(pts) else 0.0
        r = float(np.clip(span / 80.0, 1.5, 2.5 * width))
        for idx, closed in groups:
            if max(idx) >= len(pts):
                continue
            line = [(float(pts[i, 0]), float(pts[i, 1])) for i in idx]
            if closed:
                line.append(line[0])
            draw.line(line, fill=line_colour, width=max(1, int(round(r))), joint="curve")
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=dot_colour)
    return image_bytes(im, fmt)


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def boxes_overlay(rgb: np.ndarray, boxes: Sequence[tuple[Sequence[float], int, str]], *,
                  palette: list[Colour] | None = None, fmt: str = "jpeg",
                  masks: Sequence[tuple[int, int, np.ndarray]] = (),
                  mask_alpha: float = 0.45) -> bytes:
    """The image with each ``(box, class index, caption)``: the outline in the class colour, the
    caption on a filled box of that colour above the box (inside it at the top edge). Captions
    are drawn after every outline, lowest score (last) first, so the best stay readable.

    ``masks`` (one per box, ``(x0, y0, boolean region)`` in image pixels) are blended first in
    the box's class colour with ``mask_alpha``, only within their regions."""
    n = max((int(c) for _, c, _ in boxes), default=0) + 1
    colours = class_colours(n, palette)
    if len(masks):
        out = rgb.copy()
        for (x0, y0, region), (_, cls, _) in list(zip(masks, boxes))[::-1]:
            h, w = region.shape
            if not (h and w and region.any()):
                continue
            view = out[y0:y0 + h, x0:x0 + w]
            colour = np.asarray(colours[int(cls)], np.float32)
            view[region] = (view[region] * (1 - mask_alpha) + colour * mask_alpha).astype(np.uint8)
        rgb = out
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    shape = rgb.shape
    width = line_width(shape)
    fnt = font(text_size(shape))
    for (x1, y1, x2, y2), cls, _ in boxes[::-1]:
        draw.rectangle([x1, y1, x2, y2], outline=colours[int(cls)], width=width)
    for (x1, y1, _, _), cls, text in boxes[::-1]:
        h = caption_height(draw, fnt, text)
        y = y1 - h if y1 - h >= 0 else y1
        caption(draw, (x1, y), text, colours[int(cls)], fnt, (im.width, im.height))
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
