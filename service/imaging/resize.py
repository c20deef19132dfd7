"""Bilinear resampling as the official code does it: OpenCV on images, PyTorch on logits.

* Images (:func:`resize_image`) are resized by OpenCV's own ``cv2.resize(INTER_LINEAR)``, the very
  kernel the official test code calls: on the uint8 image (detection, LIP's square resize:
  OpenCV's 8-bit fixed-point path) or on the float image (segmentation scales).
* Logits (the segmentation merge) follow ``torch.nn.functional.interpolate(mode="bilinear")``.
  ``align_corners=False`` is the same mapping as OpenCV ``INTER_LINEAR``: half-pixel centres
  ``src = (dst + 0.5) * in / out - 0.5``, negative positions clamped to 0, the right/bottom tap
  clamped to the last pixel, no antialiasing. ``align_corners=True`` is PyTorch's corner-aligned
  mapping ``src = dst * (in - 1) / (out - 1)``.

Logit resampling is separable and works on row blocks of ``(C, h, w)`` arrays. Along H each
output row is a 2-tap weighted sum in float32, computed by a compiled loop
(:mod:`~service.imaging.resample_kernels`; exact, safe for ``inf``). Along W it is a 2-tap gather
(``np.take``, exact), for finite inputs a banded interpolation-matrix product (small
single-threaded GEMMs, 2-10x faster than the gathers except when shrinking a lot), and for a
whole-width resample with ``align_corners=False`` OpenCV's horizontal pass (1.5-2x faster than
the GEMMs measured on the merge's shapes). All agree up to float rounding. Coefficient tables
and matrix blocks are cached per (in, out, align_corners) and read-only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from service.imaging import resample_kernels


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
    """Bilinear coefficients mapping an axis of ``in_size`` samples to ``out_size`` samples.

    Cached: the returned arrays are shared and read-only.
    """
    return _axis_coeffs(int(in_size), int(out_size), bool(align_corners))


@lru_cache(maxsize=256)
def _axis_coeffs(in_size: int, out_size: int, align_corners: bool) -> AxisCoeffs:
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
    out = AxisCoeffs(i0, i1, (1.0 - frac).astype(np.float32), frac)
    for a in out:
        a.setflags(write=False)
    return out


def band(c: AxisCoeffs, start: int, stop: int) -> tuple[int, int]:
    """Input range ``[lo, hi)`` read by output positions ``[start, stop)`` (indices are monotonic)."""
    return int(c.i0[start]), int(c.i1[stop - 1]) + 1


def _band_matrix(c: AxisCoeffs, start: int, stop: int) -> tuple[int, int, np.ndarray]:
    lo, hi = band(c, start, stop)
    m = np.zeros((stop - start, hi - lo), np.float32)
    rows = np.arange(stop - start)
    m[rows, c.i0[start:stop] - lo] = c.w0[start:stop]
    m[rows, c.i1[start:stop] - lo] += c.w1[start:stop]  # an edge-clamped tap gets both weights
    return lo, hi, m


# OpenBLAS runs a GEMM single-threaded below m*n*k = 65536 * 4. Staying under it keeps the merge
# on its own thread (the gateway runs it beside ONNX Runtime's threads); threaded small GEMMs on
# 2 shared cores measured 2-10x slower and erratic.
_GEMM_SINGLE_THREAD_MNK = 1 << 18
_COL_BLOCK = 32


@lru_cache(maxsize=64)  # at most ~0.5 MB each
def _col_blocks(in_size: int, out_size: int, align_corners: bool) -> tuple:
    """Per block of output columns: ``(j0, j1, lo, hi, m.T)`` with ``m.T`` contiguous (in, out)."""
    c = _axis_coeffs(in_size, out_size, align_corners)
    out = []
    for j0 in range(0, out_size, _COL_BLOCK):
        j1 = min(out_size, j0 + _COL_BLOCK)
        lo, hi, m = _band_matrix(c, j0, j1)
        mt = np.ascontiguousarray(m.T)
        mt.setflags(write=False)
        out.append((j0, j1, lo, hi, mt))
    return tuple(out)


def matmul_last(x: np.ndarray, out_size: int, align_corners: bool, keep: int | None = None) -> np.ndarray:
    """Bilinear resampling of the last axis of *finite* float32 ``x`` to ``out_size`` samples.

    Only the first ``keep`` outputs are computed (a crop). A banded product: each block of output
    columns multiplies just the input columns it reads. Not for non-finite data (a zero weight
    times ``inf`` is ``nan``): use :func:`gather_last` there.
    """
    keep = out_size if keep is None else keep
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty((flat.shape[0], keep), np.float32)
    for j0, j1, lo, hi, mt in _col_blocks(x.shape[-1], out_size, bool(align_corners)):
        if j0 >= keep:
            break
        j1 = min(j1, keep)
        w = mt[:, : j1 - j0]
        step = max(1, _GEMM_SINGLE_THREAD_MNK // ((hi - lo) * (j1 - j0)))
        for i0 in range(0, flat.shape[0], step):
            i1 = min(flat.shape[0], i0 + step)
            np.matmul(flat[i0:i1, lo:hi], w, out=out[i0:i1, j0:j1])
    return out.reshape(*x.shape[:-1], keep)


def gather_last(x: np.ndarray, c: AxisCoeffs) -> np.ndarray:
    """Resample the last axis of ``x`` with ``c`` (exact 2-tap gathers; safe for ``inf``)."""
    out = np.take(x, c.i0, axis=-1)
    out *= c.w0
    tmp = np.take(x, c.i1, axis=-1)
    tmp *= c.w1
    out += tmp
    return out


# Measured on the merge's shapes (benchmarks/bench_resize.py): a banded GEMM beats the gathers
# when each output reads few inputs; it costs ~(inputs per output) multiply-adds, so for strong
# shrinking the 2-tap gathers win. Limits on inputs per output at which the GEMM is still used:
GEMM_MAX_SHRINK_COLS = 1.5


def resample_last(x: np.ndarray, c: AxisCoeffs, out_size: int, align_corners: bool,
                  finite: bool = True, *, whole_rows: bool = False) -> np.ndarray:
    """Resample the last axis of ``x`` with ``c = axis_coeffs(x.shape[-1], out_size, ...)``
    (or its :meth:`~AxisCoeffs.head`) by banded GEMM when ``finite`` and cheaper, else gathers.

    ``whole_rows``: ``x`` holds whole rows that are resampled once (not a block that other calls
    continue): OpenCV's horizontal pass may then do it (half-pixel mapping, finite data), 1.5-2x
    faster; its float rounding differs from the GEMM's, so blocks of one map never mix the two.
    """
    keep = len(c.i0)
    if whole_rows and finite and not align_corners and keep * 4 >= out_size * 3:
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n < 32767:  # cv2.resize's limit on image height (SHRT_MAX)
            # A one-row image takes another OpenCV path (errors up to 2e-4 measured): two rows.
            src = np.repeat(rows, 2, axis=0) if n == 1 else rows
            out = cv2.resize(src, (out_size, src.shape[0]), interpolation=cv2.INTER_LINEAR)[:n]
            return out[:, :keep].reshape(*x.shape[:-1], keep)
    if finite and x.shape[-1] <= GEMM_MAX_SHRINK_COLS * out_size:
        return matmul_last(x, out_size, align_corners, keep=keep)
    return gather_last(x, c)


def resample_rows(x: np.ndarray, c: AxisCoeffs, start: int, stop: int, offset: int = 0
                  ) -> np.ndarray:
    """Output rows ``[start, stop)`` of resampling axis 1 of ``x`` (C, n, W; input rows from
    ``offset``) with ``c``: the compiled 2-tap loop (:func:`~service.imaging.resample_kernels.rows`),
    exact for any values, ``inf`` included."""
    return resample_kernels.rows(x, c.i0, c.i1, c.w0, c.w1, start, stop, offset)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, (w, h), interpolation=INTER_LINEAR)`` of an ``H x W [x C]`` uint8 or
    float32 image to ``size = (h, w)``: the official code's own resize (uint8: OpenCV's 11-bit
    fixed-point path, exact 2x reductions by INTER_AREA's rounded 2x2 mean; float32: float
    weights). The identity size returns a copy, as OpenCV does."""
    out_h, out_w = int(size[0]), int(size[1])
    if image.shape[:2] == (out_h, out_w):
        return np.array(image, copy=True)
    return cv2.resize(np.ascontiguousarray(image), (out_w, out_h), interpolation=cv2.INTER_LINEAR)


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
