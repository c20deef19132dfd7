"""Labels settled at 1/4 resolution: the single whole-image pass computes scores only where the
class changes.

A bilinear sample is a sum of its four taps with non-negative weights. Where one class is strictly
the largest logit at all four taps, it is the largest in the sum as well, so the pixel's label is
that class without computing its scores. Float rounding is monotone, so the computed sums keep that
order too; only an exact tie of two computed sums could differ from ``argmax``'s lower-index rule,
and the true (unrounded) scores have the settled class ahead there.

The output is cut into *cells*: runs of output rows (columns) that share their two taps, at most
``ceil(out / in)`` long. A cell whose four corner logits agree on the top class is filled with it;
the others (about 10% of a 2048x1024 photo's cells with the random-init benchmark model, fewer
where a trained model's regions are larger) are computed as ``F.interpolate`` does: the W taps,
then the H taps, per channel, then the argmax. The upsample of the dense merge that this replaces
was 19 x 2 M values and an argmax sweep over all of them.

Used for the plans whose scores are the upsampled logits themselves: one whole-image pass at the
original size (``merge``'s ``fast`` case), finite logits, at most 255 classes, no confidence map.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from service.imaging.resize import AxisCoeffs, axis_coeffs
from service.runtime.cpu import parallel_map

# The label of cells whose corners disagree, before their pixels are computed.
UNSETTLED = 255
# Unsettled cells computed per task: their scores (classes x cells x cell pixels, float32) stay
# a few MB, in cache, and the tasks spread over the CPU pool.
CELLS_PER_TASK = 2048


class _Cells(NamedTuple):
    """One axis cut into cells: cell ``k`` covers output positions ``pos[k, :n[k]]``, all with
    the taps ``i0[k]``, ``i1[k]``; ``pos`` repeats a cell's last position to a common length."""

    i0: np.ndarray  # (K,) int64
    i1: np.ndarray
    pos: np.ndarray  # (m, K) int64: positions along the first axis, cells along the second
    w0: np.ndarray  # (m, K) float32: weights of pos
    w1: np.ndarray
    of: np.ndarray  # (out,) cell index of each output position


def _cells(c: AxisCoeffs) -> _Cells:
    """Cut the output positions of ``c`` into runs of the same taps, at most ``ceil(out/in)``
    long (a longer run, at an edge where positions clamp, is split)."""
    n_out = len(c.i0)
    m = max(1, math.ceil(n_out / (int(c.i1.max()) + 1)))
    new_tap = np.ones(n_out, bool)
    new_tap[1:] = (c.i0[1:] != c.i0[:-1]) | (c.i1[1:] != c.i1[:-1])
    run_start = np.flatnonzero(new_tap)
    run_of = np.cumsum(new_tap) - 1
    new_cell = new_tap | ((np.arange(n_out) - run_start[run_of]) % m == 0)
    start = np.flatnonzero(new_cell)
    stop = np.append(start[1:], n_out)
    pos = np.minimum(start[None, :] + np.arange(m)[:, None], (stop - 1)[None, :])
    return _Cells(c.i0[start], c.i1[start], pos, c.w0[pos], c.w1[pos], np.cumsum(new_cell) - 1)


def top_class(logits: np.ndarray) -> np.ndarray:
    """(C, h, w) finite logits -> (h, w) uint8: the strictly largest class, ``UNSETTLED`` where
    the largest logit is tied (C < 255)."""
    best = logits[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    tied = np.zeros(best.shape, np.bool_)
    flag = np.empty(best.shape, np.bool_)
    for k in range(1, logits.shape[0]):
        np.equal(logits[k], best, out=flag)
        tied |= flag
        np.greater(logits[k], best, out=flag)
        np.copyto(tied, False, where=flag)
        np.copyto(labels, k, where=flag)
        np.maximum(best, logits[k], out=best)
    labels[tied] = UNSETTLED
    return labels


def _agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` where it equals ``b``, else ``UNSETTLED`` (which only ever agrees into itself)."""
    return np.where(a == b, a, np.uint8(UNSETTLED))


def _argmax(scores: np.ndarray) -> np.ndarray:
    """``argmax(axis=0)`` as uint8, by one sweep over the classes (ties keep the lower class)."""
    best = scores[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    better = np.empty(best.shape, np.bool_)
    for k in range(1, scores.shape[0]):
        np.greater(scores[k], best, out=better)
        np.maximum(best, scores[k], out=best)
        np.copyto(labels, k, where=better)
    return labels


def settled_upsample_argmax(logits: np.ndarray, ch: AxisCoeffs, cw: AxisCoeffs) -> np.ndarray:
    """``argmax`` over classes of the bilinear resample of ``logits`` (C, h, w; finite, C < 255)
    with the row and column coefficients ``ch``, ``cw``: the (len(ch), len(cw)) uint8 label map."""
    cy, cx = _cells(ch), _cells(cw)
    top = top_class(logits)
    cols = _agree(top[:, cx.i0], top[:, cx.i1])  # (h, column cells)
    cell = _agree(cols[cy.i0], cols[cy.i1])  # (row cells, column cells)
    labels = np.take(np.take(cell, cy.of, axis=0), cx.of, axis=1)
    ky, kx = np.nonzero(cell == UNSETTLED)
    if not len(ky):
        return labels
    flat = logits.reshape(logits.shape[0], -1)
    w = logits.shape[2]

    def compute(k0: int) -> None:
        # Cells last and every operand C-contiguous (np.take, not fancy indexing, which returns
        # strided arrays): each elementwise loop then runs over the n cells, not over a cell's
        # few pixels or with strides, which measured 3-5x slower.
        y, x = ky[k0 : k0 + CELLS_PER_TASK], kx[k0 : k0 + CELLS_PER_TASK]
        r0, r1, c0, c1 = cy.i0[y] * w, cy.i1[y] * w, cx.i0[x], cx.i1[x]
        wx0, wx1 = np.take(cx.w0, x, axis=1)[None], np.take(cx.w1, x, axis=1)[None]  # (1, mx, n)
        wy0 = np.take(cy.w0, y, axis=1)[None, :, None]  # (1, my, 1, n)
        wy1 = np.take(cy.w1, y, axis=1)[None, :, None]

        def tap(idx: np.ndarray) -> np.ndarray:
            return np.take(flat, idx, axis=1)[:, None]  # (C, 1, n)

        # F.interpolate's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
        top_row = tap(r0 + c0) * wx0
        top_row += tap(r0 + c1) * wx1  # (C, mx, n)
        bottom_row = tap(r1 + c0) * wx0
        bottom_row += tap(r1 + c1) * wx1
        scores = top_row[:, None] * wy0
        scores += bottom_row[:, None] * wy1  # (C, my, mx, n)
        rows = np.take(cy.pos, y, axis=1)[:, None, :]
        labels[rows, np.take(cx.pos, x, axis=1)[None, :, :]] = _argmax(scores)

    parallel_map(compute, range(0, len(ky), CELLS_PER_TASK))  # cells cover disjoint pixels
    return labels


def applies(logits: np.ndarray, with_confidence: bool) -> bool:
    """Whether :func:`settled_upsample_argmax` may give these logits' labels: finite, fewer
    than 255 classes, and no confidence map wanted (that needs every pixel's scores)."""
    if with_confidence or logits.shape[0] >= UNSETTLED:
        return False
    return bool(np.isfinite(logits.min()) and np.isfinite(logits.max()))


def pass_coeffs(h: int, w: int, pass_size: tuple[int, int], size: tuple[int, int],
                align_corners: bool) -> tuple[AxisCoeffs, AxisCoeffs]:
    """Row and column coefficients from (h, w) logits to a pass of ``pass_size``, cropped to
    the image's ``size`` (the pass may be padded past it)."""
    return (axis_coeffs(h, pass_size[0], align_corners).head(size[0]),
            axis_coeffs(w, pass_size[1], align_corners).head(size[1]))
