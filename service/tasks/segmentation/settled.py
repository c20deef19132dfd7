"""Labels settled at 1/4 resolution: a single whole-image pass computes scores only in the
cells where the class changes.

A bilinear sample is a sum of its four taps with non-negative weights. Where one class is strictly
the largest logit at all four taps, it is the largest in the sum as well, so the pixel's label is
that class without computing its scores. Float rounding is monotone, so the computed sums keep that
order too; only an exact tie of two computed sums could differ from ``argmax``'s lower-index rule,
and the true (unrounded) scores have the settled class ahead there.

The output is cut into *cells*: runs of output rows (columns) that share their two taps, at most
``ceil(out / in)`` long. A cell whose four corner logits agree on the top class is filled with it.
In the others only the classes that can win there (:func:`possible`, typically 2-4) are scored,
as ``F.interpolate`` does (the W taps, then the H taps), and the argmax is taken over those. (The
dense merge's banded GEMMs may round a score an ulp differently, so at a near-tie the two could
differ; on every test and benchmark map they are equal.)

It pays where the label map is made of regions (a trained model's): at most ``MAX_UNSETTLED``
of the cells unsettled, estimated first on a sample of rows; noisy logits (the random-init
benchmark model's: 41% of the cells) take the dense merge. Used for the plans whose scores are
the upsampled logits themselves: one whole-image pass at the original size (``merge``'s ``fast``
case), finite logits, fewer than 255 classes, no confidence map.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from service.imaging.resize import AxisCoeffs, axis_coeffs
from service.runtime import cpu
from service.runtime.cpu import parallel_map
from service.tasks.segmentation.scores import argmax_sweep

# The label of cells whose corners disagree, before their pixels are computed.
UNSETTLED = 255
# Above this fraction of unsettled cells the dense merge is as fast (the shortcut's cost grows
# with the unsettled cells and the classes possible in them). 2048x1024 single pass, 2 threads,
# merge alone, shortcut / dense on blurred-photo logits with 11, 18, 26, 32% of the cells
# unsettled: 0.43, 0.63, 0.77, 0.90; the random-init benchmark model's logits, 41%: 0.91-1.07.
MAX_UNSETTLED = 0.35
# Rows sampled to estimate that fraction: the row pair (r, r + 1) of every SAMPLE_EVERY-th row
# (1.0 ms on the 19 x 256 x 512 logits of a 2048x1024 pass, 2.4 ms with every 8th).
SAMPLE_EVERY = 16
# Relative margin for a class to be ruled out of a cell (:func:`possible`): 1e-5 of the cell's
# largest logit, ~20x the rounding of the scores' few float32 operations.
ROUNDING = 1e-5
# Cells computed together by how many classes may win in them, (fewest, most): a group scores
# its most for all its cells. 2048x1024 benchmark photo: of 54k unsettled cells 46% have 2
# possible classes, 30% 3, 15% 4, 6% 5 and 3% more.
CANDIDATE_GROUPS = ((0, 2), (3, 3), (4, 4), (5, 6), (7, 1 << 16))
# Unsettled cells per task of the CPU pool: one task per worker, at least MIN_CELLS each (numpy's
# per-call cost: 2048-cell tasks made a 41%-unsettled pass 1.6x slower than 16384-cell ones)
# and at most TASK_BYTES of corner logits (4 x classes x cells float32: 32768 cells of 19 classes).
MIN_CELLS = 4096
TASK_BYTES = 10 * 1024 * 1024


class _Cells(NamedTuple):
    """One axis cut into cells: cell ``k`` covers the output positions ``pos[:, k]``, all with
    the taps ``i0[k]``, ``i1[k]`` (a shorter cell repeats its last position)."""

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
    """``argmax(axis=0)`` as uint8 (ties keep the lower class), by the merge's own sweep."""
    labels = np.zeros(scores.shape[1:], np.uint8)
    argmax_sweep(scores[1:], scores[0].copy(), labels, 1)
    return labels


def possible(corners: np.ndarray) -> np.ndarray:
    """Which classes may be the largest somewhere in each cell, from its corners' logits
    ``(4, C, n)``: ``(C, n)`` bool.

    Inside a cell a class's score lies between its lowest and highest corner, so a class whose
    highest corner is below another class's lowest corner never wins there; ``ROUNDING`` of the
    largest logit keeps that true of the computed scores (a few float32 roundings, weights that
    sum to 1 within an ulp). Typically 2-4 of 19 classes remain.
    """
    lo, hi = corners.min(axis=0), corners.max(axis=0)  # (C, n)
    margin = ROUNDING * np.abs(corners).max(axis=(0, 1))
    return hi >= lo.max(axis=0) - margin


def _cell_labels(corners: np.ndarray, can: np.ndarray, wy: tuple[np.ndarray, np.ndarray],
                 wx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The labels ``(my, mx, n)`` of n cells from their corners ``(4, C, n)``, the classes that
    may win ``can`` and the weights of their pixels (``(my, n)`` rows, ``(mx, n)`` columns),
    computing only the ``K`` = most possible classes of a cell."""
    n_cls, n = can.shape
    k = int(can.sum(axis=0).max())
    if k * 2 > n_cls:  # most classes: all of them, no selection
        cand = np.broadcast_to(np.arange(n_cls)[:, None], (n_cls, n))
        values = corners
    else:
        # Slot j holds the (j+1)-th possible class: the number of classes before it ranks
        # j or less (argsort did the same 3x slower); past a cell's last possible class, the
        # clamp repeats class C-1, which cannot win, or ties a slot before it.
        rank = np.cumsum(can, axis=0, dtype=np.int16)
        cand = np.stack([(rank <= j).sum(axis=0) for j in range(k)]).clip(max=n_cls - 1)
        values = np.take_along_axis(corners, np.broadcast_to(cand, (4, k, n)), axis=1)
    wx0, wx1 = wx[0][None], wx[1][None]  # (1, mx, n)
    wy0, wy1 = wy[0][None, :, None], wy[1][None, :, None]  # (1, my, 1, n)
    # F.interpolate's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
    top_row = values[0][:, None] * wx0
    top_row += values[1][:, None] * wx1  # (K, mx, n)
    bottom_row = values[2][:, None] * wx0
    bottom_row += values[3][:, None] * wx1
    scores = top_row[:, None] * wy0
    scores += bottom_row[:, None] * wy1  # (K, my, mx, n)
    slot = _argmax(scores).astype(np.intp)  # ties: the lower slot, so the lower class
    return cand[slot, np.arange(n)]


def unsettled_fraction(logits: np.ndarray, cw: AxisCoeffs, every: int = SAMPLE_EVERY) -> float:
    """The fraction of cells whose corners disagree, estimated on the row pairs ``(r, r + 1)``
    for every ``every``-th row ``r``."""
    h = logits.shape[1]
    if h < 2:
        return 1.0
    rows = np.arange(0, h - 1, every)
    top = top_class(logits[:, np.stack([rows, rows + 1], axis=1).ravel()])
    cx = _cells(cw)
    cols = _agree(top[:, cx.i0], top[:, cx.i1])
    return float((_agree(cols[0::2], cols[1::2]) == UNSETTLED).mean())


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
        y, x = ky[k0 : k0 + per_task], kx[k0 : k0 + per_task]
        r0, r1, c0, c1 = cy.i0[y] * w, cy.i1[y] * w, cx.i0[x], cx.i1[x]
        corners = np.stack([np.take(flat, i, axis=1) for i in (r0 + c0, r0 + c1, r1 + c0, r1 + c1)])
        can = possible(corners)
        count = can.sum(axis=0)
        # Cells grouped by how many classes may win in them: each group computes as many
        # (sorted once, so that every group is a slice).
        order = np.argsort(count, kind="stable")
        count, y, x = count[order], y[order], x[order]
        corners, can = np.take(corners, order, axis=2), np.take(can, order, axis=1)
        ends = np.searchsorted(count, [hi for _, hi in CANDIDATE_GROUPS], side="right")
        for a, b in zip([0, *ends[:-1]], ends):
            if a == b:
                continue
            ys, xs = y[a:b], x[a:b]
            got = _cell_labels(
                corners[:, :, a:b], can[:, a:b],
                (np.take(cy.w0, ys, axis=1), np.take(cy.w1, ys, axis=1)),
                (np.take(cx.w0, xs, axis=1), np.take(cx.w1, xs, axis=1)))
            labels[np.take(cy.pos, ys, axis=1)[:, None, :], np.take(cx.pos, xs, axis=1)[None]] = got

    n = len(ky)
    most = max(MIN_CELLS, TASK_BYTES // (16 * logits.shape[0]))
    tasks = max(min(cpu.workers(), -(-n // MIN_CELLS)), -(-n // most))
    per_task = -(-n // tasks)
    parallel_map(compute, range(0, n, per_task))  # cells cover disjoint pixels
    return labels


def applies(logits: np.ndarray, cw: AxisCoeffs, with_confidence: bool) -> bool:
    """Whether :func:`settled_upsample_argmax` should give these logits' labels (columns
    resampled with ``cw``): finite logits, fewer than 255 classes, no confidence map wanted (it
    needs every pixel's scores), and at most ``MAX_UNSETTLED`` of the cells to compute."""
    if with_confidence or logits.shape[0] >= UNSETTLED:
        return False
    if unsettled_fraction(logits, cw) > MAX_UNSETTLED:  # first: it reads an eighth of the rows
        return False
    return bool(np.isfinite(logits.min()) and np.isfinite(logits.max()))


def pass_coeffs(h: int, w: int, pass_size: tuple[int, int], size: tuple[int, int],
                align_corners: bool) -> tuple[AxisCoeffs, AxisCoeffs]:
    """Row and column coefficients from (h, w) logits to a pass of ``pass_size``, cropped to
    the image's ``size`` (the pass may be padded past it)."""
    return (axis_coeffs(h, pass_size[0], align_corners).head(size[0]),
            axis_coeffs(w, pass_size[1], align_corners).head(size[1]))
