"""Face crop and heatmap decoding of the official HRNet facial-landmark test path, in numpy.

Reproduces ``lib/utils/transforms.py`` (``get_transform``, ``transform_pixel``, ``crop``) and
``lib/core/evaluation.py`` (``get_preds``, ``decode_preds``) of HRNet-Facial-Landmark-Detection.

Coordinate frame (boxes, centres and landmarks alike): continuous image coordinates in which the
top-left pixel covers ``[0, 1] x [0, 1]`` (its centre is ``(0.5, 0.5)``) and the whole image is the
box ``[0, 0, W, H]``. It is the frame in which the official crop works: centre ``(W/2, H/2)`` with
``scale = max(W, H) / 200`` crops exactly the whole image. Subtract 0.5 for 0-based pixel-centre
(numpy/OpenCV) coordinates.

Face -> crop (official, geometry reproduced exactly):

* a face is a centre ``c`` and a ``scale`` whose ``scale * 200`` pixels are the side ``h`` of the
  square crop; a box ``[x1, y1, x2, y2]`` becomes ``c = ((x1+x2)/2, (y1+y2)/2)``,
  ``scale = max(x2-x1, y2-y1) / 200 * box_enlarge`` (1.25: the official loaders multiply the
  annotated scale by it; the annotated scale is ``max(w, h) / 200`` of the face box);
* ``sf = h / 256``; when ``sf >= 2`` the whole image is first shrunk to ``floor(H/sf) x floor(W/sf)``
  and ``c, scale`` are divided by ``sf``;
* the square's corners are ``ul = trunc(T^-1(-1, -1)) + 1`` and ``br = trunc(T^-1(255, 255)) + 1``
  (``T`` = ``get_transform``; ``trunc`` is numpy's ``astype(int)``, toward zero), pixels
  ``[ul, br)`` are copied into a zero canvas and that canvas is resized to 256 x 256.

Resampling: both resizes are Pillow's BILINEAR (triangle filter widened by the downscale factor,
i.e. antialiased), exactly what ``scipy.misc.imresize`` called. ``imresize`` also ran ``bytescale``:
it *stretched the contrast* of each resized array to 0..255 (min -> 0, max -> 255) and rounded to
uint8. ``contrast_stretch=True`` (default) reproduces that byte for byte (LUT on the same float32
arithmetic); ``False`` skips the stretch and keeps the original pixel values. The shrink step
resamples only the region the crop needs (Pillow's ``box`` argument with the full-image pixel
grid), which equals shrinking the whole image up to float rounding (at most 1 grey level, rarely).

Heatmap -> image (official ``decode_preds`` without its integer truncation): per heatmap the
argmax ``(x, y)`` (1-based), moved by 0.25 toward the larger neighbour along each axis when
``1 < x < W_hm`` and ``1 < y < H_hm``, plus 0.5, then ``T^-1`` of the heatmap-sized transform
applied to ``(x - 1, y - 1)``. The official code then truncates to an integer and adds 1 (its
1-based pixel index); we return the sub-pixel value in the frame above, so
``ours = official_without_astype_int - 1``. Confidence = the heatmap's peak value. The official
``get_preds`` zeroes the coordinates of a heatmap whose peak is <= 0; we keep the argmax (the
confidence says it is not positive) unless ``mask_nonpositive=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

#: The official scale unit (``LandmarkProtocol.scale_unit``): ``scale * 200`` px = crop side.
SCALE_UNIT = 200.0


@dataclass(frozen=True)
class Face:
    """One face to crop: centre ``(x, y)`` and ``scale`` (``scale * unit`` px = crop side)."""

    center: tuple[float, float]
    scale: float
    unit: float = SCALE_UNIT

    @property
    def side(self) -> float:
        """Side of the square crop in image pixels."""
        return self.scale * self.unit

    def square(self) -> list[float]:
        """The crop square ``[x1, y1, x2, y2]`` (rounded to 1e-4 px)."""
        h, (cx, cy) = self.side, self.center
        return [round(cx - h / 2, 4), round(cy - h / 2, 4), round(cx + h / 2, 4),
                round(cy + h / 2, 4)]


def box_to_face(box: Sequence[float], enlarge: float = 1.25, unit: float = SCALE_UNIT) -> Face:
    """``[x1, y1, x2, y2]`` -> :class:`Face` by the official rule (centre of the box,
    ``max(w, h) / unit`` times ``enlarge``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return Face(((x1 + x2) / 2.0, (y1 + y2) / 2.0), max(x2 - x1, y2 - y1) / unit * enlarge, unit)


def whole_image_face(width: int, height: int, unit: float = SCALE_UNIT) -> Face:
    """The face that crops exactly the whole image (square side ``max(W, H)``, no enlargement)."""
    return Face((width / 2.0, height / 2.0), max(width, height) / unit, unit)


def get_transform(center: Sequence[float], scale: float, output_size: Sequence[int],
                  unit: float = SCALE_UNIT) -> np.ndarray:
    """The official 3x3 image -> output transform (no rotation). ``output_size`` is ``(h, w)``."""
    h = unit * scale
    t = np.zeros((3, 3))
    t[0, 0] = float(output_size[1]) / h
    t[1, 1] = float(output_size[0]) / h
    t[0, 2] = output_size[1] * (-float(center[0]) / h + 0.5)
    t[1, 2] = output_size[0] * (-float(center[1]) / h + 0.5)
    t[2, 2] = 1.0
    return t


def _official_corner(pt: Sequence[float], center: Sequence[float], scale: float, out: Sequence[int],
                     unit: float) -> np.ndarray:
    """``transform_pixel(pt, invert=1)``: inverse transform of a 1-based point, truncated, +1."""
    t = np.linalg.inv(get_transform(center, scale, out, unit))
    p = t @ np.array([pt[0] - 1.0, pt[1] - 1.0, 1.0])
    return p[:2].astype(int) + 1


@dataclass(frozen=True)
class CropGeometry:
    """Where a face crop samples the image (all in the shrunk image when ``shrink > 1``)."""

    shrink: float  # official ``sf`` (1.0: no shrink)
    shrunk_size: tuple[int, int]  # (width, height) of the (shrunk) image
    image_size: tuple[int, int]  # (width, height) of the original image
    ul: tuple[int, int]  # first canvas pixel, (x, y), in the shrunk image's pixel indices
    br: tuple[int, int]  # one past the last canvas pixel
    output_size: tuple[int, int]  # (h, w) of the network input
    empty: bool = False  # the official crop returns zeros (image shrinks below 2 px)

    def image_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map image coordinates (frame of the module docstring) to crop coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sx = self.shrunk_size[0] / self.image_size[0]
        sy = self.shrunk_size[1] / self.image_size[1]
        cw, ch = self.br[0] - self.ul[0], self.br[1] - self.ul[1]
        x = (p[:, 0] * sx - self.ul[0]) * self.output_size[1] / cw
        y = (p[:, 1] * sy - self.ul[1]) * self.output_size[0] / ch
        return np.stack([x, y], axis=1)

    def crop_to_image(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`image_to_crop` (the crop's true sampling geometry)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sx = self.shrunk_size[0] / self.image_size[0]
        sy = self.shrunk_size[1] / self.image_size[1]
        cw, ch = self.br[0] - self.ul[0], self.br[1] - self.ul[1]
        x = (p[:, 0] * cw / self.output_size[1] + self.ul[0]) / sx
        y = (p[:, 1] * ch / self.output_size[0] + self.ul[1]) / sy
        return np.stack([x, y], axis=1)


def crop_geometry(face: Face, image_size: tuple[int, int], output_size: Sequence[int] = (256, 256)) -> CropGeometry:
    """The official crop's geometry for ``face`` in an image of ``(width, height)``."""
    wd, ht = int(image_size[0]), int(image_size[1])
    out = (int(output_size[0]), int(output_size[1]))
    center = (float(face.center[0]), float(face.center[1]))
    scale = float(face.scale)
    sf = scale * face.unit / out[0]
    shrunk = (wd, ht)
    empty = False
    if sf < 2:
        sf = 1.0
    else:
        new_size = int(math.floor(max(ht, wd) / sf))
        new_ht, new_wd = int(math.floor(ht / sf)), int(math.floor(wd / sf))
        # The official code returns zeros when new_size < 2 (and crashes on a zero side; we
        # return zeros there too).
        empty = new_size < 2 or new_ht < 1 or new_wd < 1
        shrunk = (max(new_wd, 1), max(new_ht, 1))
        center = (center[0] / sf, center[1] / sf)
        scale = scale / sf
    ul = _official_corner((0, 0), center, scale, out, face.unit)
    br = _official_corner((out[1], out[0]), center, scale, out, face.unit)
    if br[0] <= ul[0] or br[1] <= ul[1]:
        empty = True
    return CropGeometry(
        shrink=float(sf),
        shrunk_size=shrunk,
        image_size=(wd, ht),
        ul=(int(ul[0]), int(ul[1])),
        br=(int(br[0]), int(br[1])),
        output_size=out,
        empty=empty,
    )


def bytescale_lut(cmin: float, cmax: float) -> np.ndarray:
    """``scipy.misc.bytescale`` of a float32 array with this min/max, as a 256-entry LUT for
    integer-valued input (same float32 arithmetic: ``(x - cmin) * (255 / cscale)``, clip, +0.5,
    truncate)."""
    cscale = float(cmax) - float(cmin)
    if cscale == 0:
        cscale = 1.0
    scale = 255.0 / cscale
    x = np.arange(256, dtype=np.float32)
    y = (x - np.float32(cmin)) * np.float32(scale)
    return (np.clip(y, 0, 255) + np.float32(0.5)).astype(np.uint8)


def _shrunk_region(image: np.ndarray, geo: CropGeometry, x0: int, x1: int, y0: int, y1: int,
                   stretch: bool, image_range: tuple[int, int] | None) -> np.ndarray:
    """Pixels ``[y0:y1, x0:x1]`` of the official shrunk image, computed for that region only.

    Pillow's ``resize(box=...)`` samples the same full-image pixel grid (centres at
    ``(j + 0.5) * W / new_W``), and its filter is clamped to the image, not the box, so a source
    slice with a margin of the filter support plus 2 px gives the same pixels.
    """
    ht, wd = image.shape[:2]
    sx = wd / geo.shrunk_size[0]
    sy = ht / geo.shrunk_size[1]
    bx0, bx1, by0, by1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
    mx, my = math.ceil(max(sx, 1.0)) + 2, math.ceil(max(sy, 1.0)) + 2
    sx0, sx1 = max(0, int(math.floor(bx0)) - mx), min(wd, int(math.ceil(bx1)) + mx)
    sy0, sy1 = max(0, int(math.floor(by0)) - my), min(ht, int(math.ceil(by1)) + my)
    src = image[sy0:sy1, sx0:sx1]
    if stretch:
        # bytescale of the *whole* float image (its global min/max), as imresize did.
        lo, hi = image_range if image_range is not None else (image.min(), image.max())
        src = bytescale_lut(lo, hi)[src]
    pil = Image.fromarray(np.ascontiguousarray(src))
    box = (bx0 - sx0, by0 - sy0, bx1 - sx0, by1 - sy0)
    return np.asarray(pil.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box))


def crop_face(
    image: np.ndarray,
    face: Face,
    output_size: Sequence[int] = (256, 256),
    *,
    contrast_stretch: bool = True,
    image_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, CropGeometry]:
    """The official face crop of an ``H x W x 3`` uint8 RGB image.

    Returns the ``out_h x out_w x 3`` float32 crop in pixel units (0..255, not normalised; the
    graph normalises) and its :class:`CropGeometry`. ``image_range`` is the image's
    ``(min, max)`` when the caller knows it (the shrink step's contrast stretch needs it; several
    faces of one image then scan it once).
    """
    ht, wd = image.shape[:2]
    geo = crop_geometry(face, (wd, ht), output_size)
    oh, ow = geo.output_size
    if geo.empty:
        return np.zeros((oh, ow, 3), np.float32), geo
    (ulx, uly), (brx, bry) = geo.ul, geo.br
    sw, sh = geo.shrunk_size
    # Part of the canvas [ul, br) that lies inside the (shrunk) image.
    x0, x1 = max(0, ulx), min(sw, brx)
    y0, y1 = max(0, uly), min(sh, bry)
    canvas = np.zeros((bry - uly, brx - ulx, 3), np.uint8)
    inside = x1 > x0 and y1 > y0
    if inside:
        if geo.shrink > 1:
            region = _shrunk_region(image, geo, x0, x1, y0, y1, contrast_stretch, image_range)
        else:
            region = image[y0:y1, x0:x1]
        canvas[y0 - uly : y1 - uly, x0 - ulx : x1 - ulx] = region
    if contrast_stretch:
        padded = not (x0 == ulx and y0 == uly and x1 == brx and y1 == bry)
        vals = canvas[y0 - uly : y1 - uly, x0 - ulx : x1 - ulx] if inside else canvas
        cmin = 0 if padded or not inside else int(vals.min())
        cmax = int(vals.max()) if inside else 0
        canvas = bytescale_lut(cmin, cmax)[canvas]
    if canvas.shape[:2] != (oh, ow):
        canvas = np.asarray(Image.fromarray(canvas).resize((ow, oh), Image.Resampling.BILINEAR))
    return canvas.astype(np.float32), geo


def get_preds(heatmaps: np.ndarray, *, mask_nonpositive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Official ``get_preds``: 1-based argmax ``(x, y)`` per heatmap and the peak values.

    ``heatmaps`` is ``[N, K, H, W]``; returns coords ``[N, K, 2]`` (float64) and peaks ``[N, K]``.
    Ties resolve to the first maximum in row-major order, like ``torch.max``'s documented
    behaviour on CPU for a flattened map.
    """
    hm = np.asarray(heatmaps)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    peak = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    coords = np.stack([idx % w + 1, idx // w + 1], axis=2).astype(np.float64)
    if mask_nonpositive:
        coords *= (peak > 0)[..., None]
    return coords, peak.astype(np.float64)


def refine_coords(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Official quarter-pixel shift toward the larger neighbour, then +0.5 (1-based coords)."""
    hm = np.asarray(heatmaps)
    n, k, h, w = hm.shape
    c = np.array(coords, dtype=np.float64, copy=True)
    px = np.floor(c[..., 0]).astype(np.int64)
    py = np.floor(c[..., 1]).astype(np.int64)
    # The official test: 1 < px < res[0] (=W) and 1 < py < res[1] (=H); maps are square anyway.
    ok = (px > 1) & (px < w) & (py > 1) & (py < h)
    pxc = np.clip(px, 2, w - 1)
    pyc = np.clip(py, 2, h - 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    dx = hm[ni, ki, pyc - 1, pxc].astype(np.float64) - hm[ni, ki, pyc - 1, pxc - 2]
    dy = hm[ni, ki, pyc, pxc - 1].astype(np.float64) - hm[ni, ki, pyc - 2, pxc - 1]
    c[..., 0] += np.where(ok, np.sign(dx) * 0.25, 0.0)
    c[..., 1] += np.where(ok, np.sign(dy) * 0.25, 0.0)
    return c + 0.5


def heatmap_to_image(coords: np.ndarray, face: Face, heatmap_size: Sequence[int]) -> np.ndarray:
    """Official ``transform_preds`` without truncation: ``T^-1(coords - 1)`` for 1-based
    ``[K, 2]`` heatmap coordinates (``heatmap_size`` is ``(h, w)``)."""
    c = np.asarray(coords, dtype=np.float64)
    h = float(face.side)
    x = (c[..., 0] - 1.0) * h / float(heatmap_size[1]) + float(face.center[0]) - h / 2.0
    y = (c[..., 1] - 1.0) * h / float(heatmap_size[0]) + float(face.center[1]) - h / 2.0
    return np.stack([x, y], axis=-1)


def decode_heatmaps(
    heatmaps: np.ndarray, faces: Sequence[Face], *, mask_nonpositive: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``[N, K, H, W]`` of ``N`` faces -> landmarks ``[N, K, 2]`` in image coordinates
    and confidences ``[N, K]`` (official decode, sub-pixel; see the module docstring)."""
    hm = np.asarray(heatmaps)
    if hm.ndim != 4 or hm.shape[0] != len(faces):
        raise ValueError(f"heatmaps of shape {hm.shape} for {len(faces)} faces")
    coords, peak = get_preds(hm, mask_nonpositive=mask_nonpositive)
    coords = refine_coords(hm, coords)
    size = hm.shape[2:]
    pts = np.stack([heatmap_to_image(coords[i], f, size) for i, f in enumerate(faces)])
    return pts, peak


def flip_back(heatmaps: np.ndarray, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Heatmaps of a horizontally flipped crop, flipped back and with left/right pairs swapped
    (``flip_pairs`` 0-based). Works on ``[K, H, W]`` or ``[N, K, H, W]``."""
    hm = np.asarray(heatmaps)[..., ::-1].copy()
    k_axis = hm.ndim - 3
    perm = np.arange(hm.shape[k_axis])
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return np.ascontiguousarray(np.take(hm, perm, axis=k_axis))
