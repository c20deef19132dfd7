"""Vectorised bilinear resampling that reproduces OpenCV and PyTorch bit-for-bit up to float rounding.

* ``align_corners=False`` is both OpenCV ``INTER_LINEAR`` (used by the official code on the float
  image) and ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (used on
  logits): half-pixel centres ``src = (dst + 0.5) * in / out - 0.5``, negative positions clamped to
  0, the right/bottom tap clamped to the last pixel, no antialiasing.
* ``align_corners=True`` is PyTorch's corner-aligned mapping ``src = dst * (in - 1) / (out - 1)``.

Resampling is separable: each axis is a 2-tap gather (``np.take``) and a weighted sum in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class AxisCoeffs(NamedTuple):
    """Gather indices and weights of one axis: ``out = x[i0] * w0 + x[i1] * w1``."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray

    def head(self, n: int) -> "AxisCoeffs":
        """Coefficients of the first ``n`` output positions only (a crop of the output)."""
        return AxisCoeffs(self.i0[:n], self.i1[:n], self.w0[:n], self.w1[:n])


def axis_coeffs(in_size: int, out_size: int, align_corners: bool = False) -> AxisCoeffs:
    """Bilinear coefficients mapping an axis of ``in_size`` samples to ``out_size`` samples."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        # float32 like PyTorch's kernel: positions near integers then round the same way.
        scale = np.float32((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
        src = (dst.astype(np.float32) * scale).astype(np.float64)
    else:
        src = (dst + 0.5) * (in_size / out_size) - 0.5
        src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    frac = (src - i0).astype(np.float32)
    frac = np.clip(frac, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return AxisCoeffs(i0, i1, (1.0 - frac).astype(np.float32), frac)


def _along(x: np.ndarray, c: AxisCoeffs, axis: int) -> np.ndarray:
    """Apply one axis' 2-tap filter to ``x`` along ``axis``."""
    shape = [1] * x.ndim
    shape[axis] = -1
    w0 = c.w0.reshape(shape)
    w1 = c.w1.reshape(shape)
    out = np.take(x, c.i0, axis=axis)
    out *= w0
    out += np.take(x, c.i1, axis=axis) * w1
    return out


def resize_with(
    x: np.ndarray, ch: AxisCoeffs, cw: AxisCoeffs, h_axis: int, w_axis: int
) -> np.ndarray:
    """Resample ``x`` (float32) with precomputed per-axis coefficients.

    The axis that shrinks most goes first, so the intermediate stays small.
    """
    x = np.asarray(x, dtype=np.float32)
    h_in, w_in = x.shape[h_axis], x.shape[w_axis]
    if len(ch.i0) * w_in <= h_in * len(cw.i0):
        return _along(_along(x, ch, h_axis), cw, w_axis)
    return _along(_along(x, cw, w_axis), ch, h_axis)


def resize_bilinear(
    x: np.ndarray,
    size: tuple[int, int],
    *,
    align_corners: bool = False,
    layout: str = "chw",
) -> np.ndarray:
    """Bilinear resize of ``x`` to ``size = (out_h, out_w)``.

    ``layout`` names where H and W are: "hw", "chw", "nchw" (H, W last) or "hwc" (channels last).
    Returns float32. The identity size returns a float32 copy.
    """
    if layout in ("hw", "chw", "nchw"):
        h_axis, w_axis = x.ndim - 2, x.ndim - 1
    elif layout == "hwc":
        h_axis, w_axis = x.ndim - 3, x.ndim - 2
    else:
        raise ValueError(f"unknown layout {layout!r}")
    out_h, out_w = int(size[0]), int(size[1])
    h_in, w_in = x.shape[h_axis], x.shape[w_axis]
    if (h_in, w_in) == (out_h, out_w):
        return np.array(x, dtype=np.float32, copy=True)
    ch = axis_coeffs(h_in, out_h, align_corners)
    cw = axis_coeffs(w_in, out_w, align_corners)
    return resize_with(x, ch, cw, h_axis, w_axis)


# --------------------------------------------------------------------------------------------
# OpenCV INTER_LINEAR on uint8 images (fixed point), for the official LIP square resize
# --------------------------------------------------------------------------------------------

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _u8_coeffs(n_in: int, n_out: int, vertical: bool) -> tuple[np.ndarray, ...]:
    """OpenCV's fixed-point taps: float32 positions, weights rounded to 11 bits.

    Horizontally, positions outside the image are clamped with weight (1, 0); vertically OpenCV
    keeps the fractional weight and clamps the row indices instead.
    """
    scale = 1.0 / (n_out / n_in)
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    if not vertical:
        low = s < 0
        f[low], s[low] = 0.0, 0
        high = s >= n_in - 1
        f[high], s[high] = 0.0, n_in - 1
    w0 = np.rint((np.float32(1.0) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(s, 0, n_in - 1), np.clip(s + 1, 0, n_in - 1), w0, w1


def resize_uint8_opencv(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` for a uint8 HxW[xC] image.

    Reproduces OpenCV's 8-bit path bit for bit: 11-bit weights, integer horizontal pass, and the
    vectorised vertical pass ``(((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2) >> 2``;
    an exact 2x reduction is OpenCV's INTER_AREA shortcut (rounded 2x2 mean).
    """
    out_h, out_w = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    src = img.astype(np.int64)
    if src.ndim == 2:
        src = src[:, :, None]
    if h == 2 * out_h and w == 2 * out_w:
        s = src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2]
        out = (s + 2) >> 2
    else:
        x0, x1, a0, a1 = _u8_coeffs(w, out_w, vertical=False)
        y0, y1, b0, b1 = _u8_coeffs(h, out_h, vertical=True)
        rows = np.unique(np.concatenate([y0, y1]))  # only the rows the vertical pass reads
        hx = src[rows][:, x0] * a0[None, :, None] + src[rows][:, x1] * a1[None, :, None]
        where = np.searchsorted(rows, np.arange(h))
        s0, s1 = hx[where[y0]], hx[where[y1]]
        out = (((s0 >> 4) * b0[:, None, None]) >> 16) + (((s1 >> 4) * b1[:, None, None]) >> 16)
        out = (out + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[:, :, 0] if img.ndim == 2 else out
