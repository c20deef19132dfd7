"""The merge's arithmetic, in blocks of rows: a scale's regions prepared at 1/4 resolution, its
exp-scores evaluated for any block of source rows, and the running argmax over channel chunks.

Each region's logits are resampled along W once, at 1/4 resolution (:func:`prepare_scale`). Per
block of output rows, every scale then computes only the rows it needs (H upsample, ``exp``, window
average), resamples them onto the block and adds them up (:func:`source_rows`), and the block's
argmax is folded in (:class:`RunningArgmax`): no full-resolution map is ever materialised and a
block's work stays in cache. A scale map that is shrunk onto the source image (large scales of a
small photo) is evaluated only at the rows and columns the shrink's taps read: the rest would be
computed to be thrown away. Rows are resampled by the compiled 2-tap loop
(:mod:`~service.imaging.resample_kernels`); columns by OpenCV or small banded GEMMs
(single-threaded BLAS) when every value is known finite (:func:`gemm_safe`), else by exact
2-tap gathers. A single whole-image pass wanting labels only takes them straight from the
upsampling loop (:func:`upsampled_labels`).

:mod:`~service.tasks.segmentation.merge` (after the passes) and
:mod:`~service.tasks.segmentation.merge_early` (during them) are both built on these, with the same
blocks in the same order, so they give the same labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import cv2
import numpy as np

from service.imaging import resample_kernels
from service.imaging.resize import (
    AxisCoeffs, axis_coeffs, band, gather_last, resample_last, resample_rows,
)
from service.runtime.cpu import parallel_map, workers
from service.tasks.segmentation.plan import ScalePlan, SegPlan, Window


# Row blocks per CPU worker of :func:`upsampled_labels`. 2048x1024 pass, 2 workers, the merge
# alone on logits in cache, medians of 21: 4 blocks 5.5 ms, 8 blocks 6.4, 16 blocks 7.2, 64
# blocks 8.9 (each block redoes the W pass of its edge rows; OpenCV's threads and the pool's
# share the cores).
LABEL_BLOCKS_PER_WORKER = 2
# Target bytes of one block of full-resolution rows (all channels of a chunk), so that a block's
# upsample, exp, window average, resample and argmax run from cache (1-4 MB measured best).
BLOCK_BYTES = 2 * 1024 * 1024
# Largest exponent (max logit + log(number of scales)) for which the summed exp-scores are surely
# finite in float32 (exp(88.7) overflows). Above it, or with non-finite logits, resampling uses the
# exact gathers: in a GEMM a zero weight times inf is nan and would spread over a block.
EXP_SAFE = 85.0
# A scale map shrunk onto the source image is evaluated only at the rows (columns) the shrink's
# two taps read when those are at most this fraction of them: at 6 scales of a 600x400 photo
# (official base size 2048, maps up to 3584x2389) that is 5.5 of 24 M pixels, and the H upsample,
# exp and window average of the rows nobody reads were most of the merge.
COMPACT_FRACTION = 0.75


def region_logits(plan: SegPlan, logits: "Mapping[int, np.ndarray] | list[np.ndarray]",
                  idx: int) -> np.ndarray:
    """The (flip-averaged) 1/4-resolution logits of the region whose first pass is ``idx``."""
    a = logits[idx].astype(np.float32, copy=False)
    if not plan.flip:
        return a
    b = logits[idx + 1].astype(np.float32, copy=False)
    perm = list(range(b.shape[0]))
    for i, j in plan.flip_pairs or ():
        perm[i], perm[j] = j, i
    # (a + b[perm, :, ::-1]) * 0.5 with the mirror by OpenCV, channel by channel: numpy's add
    # over a reversed view is not vectorised (a 1.75-scale window pair 1.9 vs 5.2 ms; 86 ms of
    # CPU in each 2048x1024 30-pass merge). The same sums: addition commutes exactly.
    out = np.empty_like(a)
    for c, k in enumerate(perm):
        cv2.flip(np.ascontiguousarray(b[k]), 1, dst=out[c])
    out += a
    out *= np.float32(0.5)
    return out


@dataclass
class _Region:
    """One window (or the whole image) of a scale, clipped to the resized image ``sp.size``, in
    the coordinates of the scale's evaluation grid (:class:`ScaleWork`).

    ``u`` holds the region's logits already resampled along W (at its ``x1 - x0`` grid columns)
    but still at 1/4 resolution along H; ``rows`` resamples H onto its grid rows (entry
    ``g - y0`` for grid row ``g``).
    """

    y0: int
    y1: int
    x0: int
    x1: int
    u: np.ndarray  # (C, h/4, x1 - x0) float32
    rows: AxisCoeffs  # h/4 -> pass height (only the first y1 - y0 rows are used)


@dataclass
class ScaleWork:
    """A scale's regions and how its evaluation grid maps onto the source image.

    The grid is the resized image ``sp.size``, or only the rows / columns of it that the shrink
    onto the source reads (``rows_at`` / ``cols_at``, sorted; None: all of them).
    """

    sp: ScalePlan
    regions: list[_Region]
    inv_count: "_InvCount | None"  # 1 / windows over each grid pixel (None: whole image)
    down: Resample | None  # grid -> source_size (None: same size)
    rows_at: np.ndarray | None = None
    cols_at: np.ndarray | None = None

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.sp.size
        return (h if self.rows_at is None else len(self.rows_at),
                w if self.cols_at is None else len(self.cols_at))


class _InvCount:
    """``1 / count`` of the windows over the grid, by rows. Sliding windows form a product of row
    and column intervals, so the count is ``count_y * count_x`` and the 2D map is never built
    (a 3584x2389 canvas took 0.1 s per scale to count); each factor is 1 or 2, so the product of
    the reciprocals is exactly the official ``1 / count``."""

    def __init__(self, sp: ScalePlan, rows_at: np.ndarray | None, cols_at: np.ndarray | None) -> None:
        h, w = sp.size
        wins = sp.windows or []
        ys = sorted({(win.y0, win.y1) for win in wins})
        xs = sorted({(win.x0, win.x1) for win in wins})
        self.full: np.ndarray | None = None
        if len(wins) == len(ys) * len(xs) and {(win.y0, win.y1, win.x0, win.x1) for win in wins} == {
                (y0, y1, x0, x1) for y0, y1 in ys for x0, x1 in xs}:
            self.iy = self._axis(ys, sp.canvas[0], h, rows_at)
            self.ix = self._axis(xs, sp.canvas[1], w, cols_at)
            return
        count = np.zeros(sp.canvas, np.float32)  # not a grid of windows (no plan makes one)
        for win in wins:
            count[win.y0 : win.y1, win.x0 : win.x1] += 1.0
        inv = 1.0 / count[:h, :w]
        inv = inv if rows_at is None else inv[rows_at]
        self.full = np.ascontiguousarray(inv if cols_at is None else inv[:, cols_at], np.float32)

    @staticmethod
    def _axis(spans: list[tuple[int, int]], canvas: int, n: int, at: np.ndarray | None) -> np.ndarray:
        count = np.zeros(canvas, np.float32)
        for a, b in spans:
            count[a:b] += 1.0
        inv = (1.0 / count[:n]).astype(np.float32)
        return inv if at is None else inv[at]

    def rows(self, a: int, b: int) -> np.ndarray:
        """Factors of grid rows ``[a, b)``: (b - a, grid width)."""
        if self.full is not None:
            return self.full[a:b]
        return self.iy[a:b, None] * self.ix[None, :]


@lru_cache(maxsize=256)
def _read_positions(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """The input positions a resize from ``in_size`` to ``out_size`` reads, sorted, read-only.
    Cached like the coefficients: a plan asks for them three times per scale, and the sorts were
    9% of a small request's merge (600x400 at scale 0.25)."""
    c = axis_coeffs(in_size, out_size, align_corners)
    at = np.union1d(c.i0, c.i1)
    at.setflags(write=False)
    return at


def _reads(in_size: int, out_size: int, align_corners: bool) -> np.ndarray | None:
    """The input positions a shrink reads (:func:`_read_positions`); None when they are most
    of ``in_size``."""
    at = _read_positions(in_size, out_size, align_corners)
    return at if len(at) <= COMPACT_FRACTION * in_size else None


def _on(c: AxisCoeffs, at: np.ndarray | None) -> AxisCoeffs:
    """``c`` with input positions renumbered onto the subset ``at`` (which holds all of them)."""
    if at is None:
        return c
    return AxisCoeffs(np.searchsorted(at, c.i0), np.searchsorted(at, c.i1), c.w0, c.w1)


def _sub(c: AxisCoeffs, idx: np.ndarray) -> AxisCoeffs:
    """The output positions ``idx`` of ``c`` only."""
    return AxisCoeffs(c.i0[idx], c.i1[idx], c.w0[idx], c.w1[idx])


def _shrink(plan: SegPlan, sp: ScalePlan) -> tuple[AxisCoeffs, AxisCoeffs, np.ndarray | None,
                                                  np.ndarray | None] | None:
    """How scale ``sp``'s map goes onto the source image: the H and W coefficients and the grid
    rows and columns it reads (None: all); None when it is the source size."""
    if sp.size == plan.source_size:
        return None
    h, w = sp.size
    (hs, ws), ac = plan.source_size, plan.align_corners
    return (axis_coeffs(h, hs, ac), axis_coeffs(w, ws, ac), _reads(h, hs, ac), _reads(w, ws, ac))


def block_rows(plan: SegPlan, grids: list[tuple[int, int]], classes: int, block_bytes: int) -> int:
    """Output rows per block: about ``block_bytes`` of the widest row of ``classes`` channels,
    the scales' grid rows per source row counted in (the same for every block of a merge)."""
    widest = max([plan.original_size[1], plan.source_size[1]] + [g[1] for g in grids])
    ratio = max([1.0] + [g[0] / plan.source_size[0] for g in grids])
    return max(1, int(block_bytes // (4 * classes * widest * ratio)))


def grid_size(plan: SegPlan, sp: ScalePlan) -> tuple[int, int]:
    """Scale ``sp``'s evaluation grid (:class:`ScaleWork`), from the plan alone."""
    sh = _shrink(plan, sp)
    h, w = sp.size
    if sh is None:
        return h, w
    return (h if sh[2] is None else len(sh[2]), w if sh[3] is None else len(sh[3]))


def work_bytes_per_channel(plan: SegPlan, sp: ScalePlan) -> int:
    """Bytes per channel of scale ``sp``'s prepared regions (:func:`prepare_scale`): 1/4-res
    rows by the grid columns each window covers."""
    h, w = sp.size
    sh = _shrink(plan, sp)
    cols_at = None if sh is None else sh[3]
    rows = math.ceil(sp.pass_size[0] / plan.output_stride)
    total = 0
    for win in sp.windows or [Window(0, h, 0, w)]:
        x0, x1 = win.x0, min(win.x1, w)
        if cols_at is not None:
            x0, x1 = (int(v) for v in np.searchsorted(cols_at, [x0, x1]))
        total += rows * max(0, x1 - x0)
    return 4 * total


def gemm_safe(regs: list[np.ndarray], n_scales: int) -> bool:
    """Whether GEMMs are safe for these logits: all finite, and so is every sum of ``n_scales``
    of their exp-scores (see ``EXP_SAFE``)."""
    top, bottom = max(float(r.max()) for r in regs), min(float(r.min()) for r in regs)
    return bool(math.isfinite(bottom) and math.isfinite(top)
                and top + math.log(n_scales) < EXP_SAFE)


def prepare_scale(plan: SegPlan, sp: ScalePlan, regs: list[np.ndarray], finite: bool) -> ScaleWork:
    """Resample every region's logits along W (1/4-res rows: cheap) and tabulate the rest."""
    ac = plan.align_corners
    h, w = sp.size
    rows_at = cols_at = down = None
    sh = _shrink(plan, sp)
    if sh is not None:
        ch, cw, rows_at, cols_at = sh
        down = Resample(_on(ch, rows_at), _on(cw, cols_at), plan.source_size[1], ac, finite,
                         cols_renumbered=cols_at is not None)
    wins = [Window(0, h, 0, w)] if sp.windows is None else sp.windows

    def region(item: tuple[Window, np.ndarray]) -> _Region | None:
        win, lg = item
        y1, x1 = min(win.y1, h), min(win.x1, w)
        if y1 <= win.y0 or x1 <= win.x0:
            return None  # a window entirely in the base variant's padding
        cw = axis_coeffs(lg.shape[2], sp.pass_size[1], ac).head(x1 - win.x0)
        u = resample_last(lg, cw, sp.pass_size[1], ac, finite, whole_rows=True)
        rows = axis_coeffs(lg.shape[1], sp.pass_size[0], ac)
        gy0, gy1, gx0, gx1 = win.y0, y1, win.x0, x1
        if cols_at is not None:
            gx0, gx1 = (int(v) for v in np.searchsorted(cols_at, [win.x0, x1]))
            u = np.take(u, cols_at[gx0:gx1] - win.x0, axis=2)  # 4x faster than u[:, :, idx]
        if rows_at is not None:
            gy0, gy1 = (int(v) for v in np.searchsorted(rows_at, [win.y0, y1]))
            rows = _sub(rows, rows_at[gy0:gy1] - win.y0)
        return _Region(gy0, gy1, gx0, gx1, u, rows) if gy1 > gy0 and gx1 > gx0 else None

    regions = [r for r in map(region, list(zip(wins, regs))) if r is not None]
    inv_count = None if sp.windows is None else _InvCount(sp, rows_at, cols_at)
    return ScaleWork(sp, regions, inv_count, down, rows_at, cols_at)


def _region_rows(r: _Region, a: int, b: int) -> np.ndarray:
    """Logits of region rows ``[a, b)`` (region coordinates), full region width: (C, b-a, x1-x0)."""
    return resample_rows(r.u, r.rows, a, b)


def _scale_rows(work: ScaleWork, a: int, b: int, take_exp: bool) -> np.ndarray:
    """exp-scores (window-averaged) of grid rows ``[a, b)``: (C, b-a, grid width)."""
    if work.inv_count is None:
        out = _region_rows(work.regions[0], a, b)
        if take_exp:
            np.exp(out, out=out)
        return out
    c = work.regions[0].u.shape[0]
    out = np.zeros((c, b - a, work.grid[1]), np.float32)
    for r in work.regions:
        ra, rb = max(a, r.y0), min(b, r.y1)
        if ra >= rb:
            continue
        part = _region_rows(r, ra - r.y0, rb - r.y0)
        np.exp(part, out=part)
        out[:, ra - a : rb - a, r.x0 : r.x1] += part
    out *= work.inv_count.rows(a, b)
    return out


@dataclass(frozen=True)
class Resample:
    """Bilinear map of a (C, h, w) score map onto (C, out_h, out_w), applied by row blocks."""

    ch: AxisCoeffs
    cw: AxisCoeffs
    out_w: int
    align_corners: bool
    finite: bool  # scores known finite: columns by OpenCV or GEMMs; else exact gathers
    cols_renumbered: bool = False  # cw reads a subset of the columns: its own 2-tap gathers

    @classmethod
    def make(cls, size: tuple[int, int], out: tuple[int, int], ac: bool, finite: bool) -> "Resample":
        return cls(axis_coeffs(size[0], out[0], ac), axis_coeffs(size[1], out[1], ac), out[1],
                   ac, finite)

    def block(self, x: np.ndarray, offset: int, start: int, stop: int) -> np.ndarray:
        """Output rows ``[start, stop)`` from ``x`` holding input rows ``[offset, ...)``.

        Rows go first when the map shrinks along H, else columns: decided by the map, not by
        the block, so every block (of any size) does the same arithmetic.
        """
        if not self.rows_last:
            return self._cols(self._rows(x, offset, start, stop))
        return self._rows(self._cols(x), offset, start, stop)

    def block_labels(self, x: np.ndarray, offset: int, start: int, stop: int,
                     out: np.ndarray) -> None:
        """Rows ``[start, stop)`` of ``out`` (int32) set to the argmax over classes of
        :meth:`block` of *finite* ``x``: where rows go last, straight from the rows loop
        (:func:`~service.imaging.resample_kernels.rows_argmax`, the same arithmetic)."""
        if not self.rows_last:
            out[start:stop] = argmax_finite(self.block(x, offset, start, stop))
            return
        ch = self.ch
        resample_kernels.rows_argmax(self._cols(x), ch.i0, ch.i1, ch.w0, ch.w1, start, stop,
                                     out, offset=offset)

    @property
    def rows_last(self) -> bool:
        """Whether rows are resampled after the columns: unless the map shrinks along H (fewer
        output than input rows)."""
        return len(self.ch.i0) >= int(self.ch.i1.max()) + 1

    def _rows(self, x: np.ndarray, offset: int, start: int, stop: int) -> np.ndarray:
        return resample_rows(x, self.ch, start, stop, offset)

    def _cols(self, x: np.ndarray) -> np.ndarray:
        if self.cols_renumbered:  # OpenCV and the GEMM tables assume the plain size mapping
            return gather_last(x, self.cw)
        # A block holds whole rows: OpenCV's horizontal pass may do them (row-count independent).
        return resample_last(x, self.cw, self.out_w, self.align_corners, self.finite,
                             whole_rows=True)


def source_rows(works: list[ScaleWork], start: int, stop: int, take_exp: bool) -> np.ndarray:
    """Sum over scales of the scores of source-image rows ``[start, stop)``: (C, rows, Ws)."""
    total = None
    for work in works:
        if work.down is None:
            s = _scale_rows(work, start, stop, take_exp)
        else:
            a, b = band(work.down.ch, start, stop)
            s = work.down.block(_scale_rows(work, a, b, take_exp), a, start, stop)
        if total is None:
            total = s
        else:
            total += s
    assert total is not None
    return total


def source_labels(works: list[ScaleWork], start: int, stop: int, take_exp: bool,
                  out: np.ndarray) -> None:
    """Write into rows ``[start, stop)`` of ``out`` (int32, (H, W)) the argmax over classes of
    :func:`source_rows` (same arguments), for *finite* scores (:func:`gemm_safe`).

    One scale resampled along H last (a scale smaller than the source, as 0.25 or 0.5 is of
    most photos) takes its labels straight from the rows loop
    (:func:`~service.imaging.resample_kernels.rows_argmax`, the very arithmetic of
    :meth:`Resample.block`): the block's full-resolution scores are neither written nor read
    back by an argmax.
    """
    if len(works) == 1 and works[0].down is not None and works[0].down.rows_last:
        down = works[0].down
        a, b = band(down.ch, start, stop)
        down.block_labels(_scale_rows(works[0], a, b, take_exp), a, start, stop, out)
        return
    out[start:stop] = argmax_finite(source_rows(works, start, stop, take_exp))


def upsampled_labels(logits: np.ndarray, ch: AxisCoeffs, cw: AxisCoeffs, out_w: int,
                     align_corners: bool) -> np.ndarray:
    """``argmax`` over classes of the bilinear resample of *finite* ``logits`` (C, h, w): rows
    with ``ch``, columns with ``cw`` (a resample to ``out_w`` columns or its head, a crop), as a
    (len(ch), len(cw)) int32 label map, ties to the lower class.

    By blocks of output rows on the CPU pool, each from only the 1/4-resolution rows it reads:
    along W first (OpenCV's pass, whole rows: the same numbers for any rows given), then the
    rows' two taps and the argmax in one compiled loop
    (:func:`~service.imaging.resample_kernels.rows_argmax`). No full-resolution score is stored,
    nor the whole W-resampled map (38 MiB at 2048x1024). 2048x1024, the merge alone: 5.5 ms on
    logits in cache, 11 ms right after a real inference (as in the gateway), against 31-37 ms
    for the block GEMMs and ``reduceArgMax``; the same labels (``F.interpolate``'s order: W,
    then H).
    """
    h = len(ch.i0)
    labels = np.empty((h, len(cw.i0)), np.int32)
    step = max(1, -(-h // (LABEL_BLOCKS_PER_WORKER * workers())))

    def block(r0: int) -> None:
        r1 = min(h, r0 + step)
        lo, hi = band(ch, r0, r1)
        u = resample_last(logits[:, lo:hi], cw, out_w, align_corners, True, whole_rows=True)
        resample_kernels.rows_argmax(u, ch.i0, ch.i1, ch.w0, ch.w1, r0, r1, labels, offset=lo)

    parallel_map(block, range(0, h, step))  # blocks write disjoint rows
    return labels


def argmax_sweep(scores: np.ndarray, best: np.ndarray, labels: np.ndarray, c0: int) -> None:
    """Fold ``scores`` (C, ...) of classes ``c0..`` into ``best`` and ``labels`` (C-contiguous)
    in place.

    One sweep over the classes: a class takes the pixel only when strictly above the best so far,
    so ties keep the lower class, as argmax does; NaN spreads into ``best`` as ``np.maximum``
    spreads it. One compiled loop (:func:`~service.imaging.resample_kernels.sweep`) reads each
    score once where numpy's compare, max and masked store made three passes per class: the
    merge's blocks of 5 x 24 x 2048 scores 0.07 vs 0.91 ms, a whole 19 x 1024 x 2048 map 26 vs
    46 ms (single thread).
    """
    resample_kernels.sweep(scores, best, labels, c0)


def argmax_finite(scores: np.ndarray) -> np.ndarray:
    """``argmax(axis=0)`` of *finite* float32 ``scores`` (C, ...) as int32, ties to the lower class.

    One read of each score in a compiled loop (:func:`~service.imaging.resample_kernels.argmax`)
    that keeps no running maximum in memory, unlike :func:`argmax_sweep`; OpenCV's
    ``reduceArgMax`` took 8-18x the time (5.2-11.9 vs 0.67 ms on 19 x 400 x 600: 3.7 ms of CPU
    in each small request, 600x400 at scale 0.25). Not for NaN: a NaN in the first class would keep its pixel at
    class 0, where the sweep skips NaN.
    """
    return resample_kernels.argmax(scores)


class RunningArgmax:
    """Running argmax over channel chunks (ties keep the lower class, like ``argmax``).

    ``direct``: every update brings all the classes of its rows, finite, and no confidence is
    asked for; each pixel is then decided in one update by :func:`argmax_finite` and no running
    maximum is kept (``best`` is None).
    """

    def __init__(self, size: tuple[int, int], with_confidence: bool, softmax: bool, *,
                 direct: bool = False) -> None:
        self.direct = direct and not with_confidence
        self.best = None if self.direct else np.full(size, -np.inf, np.float32)
        self.labels = np.zeros(size, np.int32)
        self.total = np.zeros(size, np.float32) if with_confidence else None
        self.softmax = softmax  # scores are logits: total holds sum(exp(l - best))

    def update(self, scores: np.ndarray, c0: int, r0: int) -> None:
        """Fold in ``scores`` (C, rows, W) of classes ``c0..`` for rows ``r0..``."""
        r1 = r0 + scores.shape[1]
        if self.direct:
            if c0:
                raise ValueError("a direct RunningArgmax takes all classes in one update")
            self.labels[r0:r1] = argmax_finite(scores)
            return
        best, labels = self.best[r0:r1], self.labels[r0:r1]
        if self.total is not None:
            total = self.total[r0:r1]
            if self.softmax:  # rescale the sum so far to the new maximum before adding
                new_best = np.maximum(best, scores.max(axis=0))
                total *= np.exp(best - new_best)
                shifted = scores - new_best
                np.exp(shifted, out=shifted)
                total += shifted.sum(axis=0)
            else:
                total += scores.sum(axis=0)
        argmax_sweep(scores, best, labels, c0)

    def confidence(self) -> np.ndarray | None:
        if self.total is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = (1.0 / self.total) if self.softmax else self.best / self.total
        return np.nan_to_num(conf, nan=0.0, posinf=1.0).astype(np.float32)
