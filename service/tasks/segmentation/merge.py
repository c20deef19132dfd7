"""Segmentation merge: the passes' logits -> the label map, in the official order.

Merge: logits bilinearly upsampled to the pass's input size (``align_corners`` of the model), the
flipped pass flipped back (LIP: left/right channels swapped) and averaged *before* ``exp``, windows
count-averaged, cropped, resized to the source size, summed over scales; LIP's sum is finally
resized to the original size; the label is the argmax.

Shortcuts (exact up to float rounding): bilinear resampling is linear and mirror-symmetric, so the
flip average is taken on the 1/4-resolution logits before one upsample; only the cropped part of an
upsampled pass is computed; a single whole-image pass at the original size skips ``exp`` (monotonic).

Speed: each region's logits are resampled along W once, at 1/4 resolution. The output is then
produced in blocks of rows: per block, every scale computes only the rows it needs (H upsample,
``exp``, window average), resamples them onto the block and adds them up, and the block's argmax is
taken, so no full-resolution map is ever materialised and a block's work stays in cache.
Resampling uses small banded GEMMs (single-threaded BLAS) when every value is known finite, else
exact 2-tap gathers. Many classes are split into channel chunks with a running argmax. Row
blocks are independent, so they run on the gateway's CPU pool (:mod:`service.runtime.cpu`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.contract import LOGITS
from service.imaging.resize import AxisCoeffs, axis_coeffs, band, resample_last, resample_rows
from service.runtime.cpu import parallel_map
from service.tasks.segmentation.plan import ScalePlan, SegPlan, Window


# Bytes of float32 1/4-resolution work kept at once (LIP: plus its source-size score map);
# more channels than fit are merged in chunks with a running argmax.
MEMORY_BUDGET = 384 * 1024 * 1024
# Target bytes of one block of full-resolution rows (all channels of a chunk), so that a block's
# upsample, exp, window average, resample and argmax run from cache (1-4 MB measured best).
BLOCK_BYTES = 2 * 1024 * 1024
# Largest exponent (max logit + log(number of scales)) for which the summed exp-scores are surely
# finite in float32 (exp(88.7) overflows). Above it, or with non-finite logits, resampling uses the
# exact gathers: in a GEMM a zero weight times inf is nan and would spread over a block.
EXP_SAFE = 85.0


@dataclass
class MergeResult:
    labels: np.ndarray  # (H, W) class index: int32 here, uint8 from the merge graph
    confidence: np.ndarray | None  # (H, W) float32: max score / sum of scores (0..1)


def _region_logits(plan: SegPlan, logits: list[np.ndarray], idx: int) -> np.ndarray:
    """The (flip-averaged) 1/4-resolution logits of the region whose first pass is ``idx``."""
    a = logits[idx].astype(np.float32, copy=False)
    if not plan.flip:
        return a
    b = logits[idx + 1][:, :, ::-1]
    if plan.flip_pairs:
        perm = np.arange(b.shape[0])
        for i, j in plan.flip_pairs:
            perm[i], perm[j] = j, i
        b = b[perm]
    return (a + b) * np.float32(0.5)


@dataclass
class _Region:
    """One window (or the whole image) of a scale, clipped to the resized image ``sp.size``.

    ``u`` holds the region's logits already resampled along W (``x1 - x0`` columns) but still at
    1/4 resolution along H; ``rows`` resamples H for any range of output rows.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    u: np.ndarray  # (C, h/4, x1 - x0) float32
    rows: AxisCoeffs  # h/4 -> pass height (only the first y1 - y0 rows are used)
    finite: bool  # u is finite: resample rows with a GEMM


@dataclass
class _ScaleWork:
    """A scale's regions and how its canvas maps onto the source image."""

    sp: ScalePlan
    regions: list[_Region]
    inv_count: np.ndarray | None  # 1 / windows over each pixel of sp.size (None: whole image)
    down: _Resample | None  # sp.size -> source_size (None: same size)


def _prepare_scale(plan: SegPlan, sp: ScalePlan, regs: list[np.ndarray], finite: bool) -> _ScaleWork:
    """Resample every region's logits along W (1/4-res rows: cheap) and tabulate the rest."""
    ac = plan.align_corners
    h, w = sp.size
    wins = [Window(0, h, 0, w)] if sp.windows is None else sp.windows
    regions = []
    for win, lg in zip(wins, regs):
        y1, x1 = min(win.y1, h), min(win.x1, w)
        if y1 <= win.y0 or x1 <= win.x0:
            continue  # a window entirely in the base variant's padding
        cw = axis_coeffs(lg.shape[2], sp.pass_size[1], ac).head(x1 - win.x0)
        u = resample_last(lg, cw, sp.pass_size[1], ac, finite, whole_rows=True)
        rows = axis_coeffs(lg.shape[1], sp.pass_size[0], ac)
        regions.append(_Region(win.y0, y1, win.x0, x1, u, rows, finite))
    inv_count = None
    if sp.windows is not None:
        count = np.zeros(sp.canvas, np.float32)
        for win in sp.windows:
            count[win.y0 : win.y1, win.x0 : win.x1] += 1.0
        # Windows overlap at most pairwise per axis (stride >= crop/2), so counts are 1, 2 or 4
        # and multiplying by the reciprocal is exactly the official division.
        inv_count = np.ascontiguousarray(1.0 / count[:h, :w], dtype=np.float32)
    down = None
    if sp.size != plan.source_size:
        down = _Resample.make(sp.size, plan.source_size, ac, finite)
    return _ScaleWork(sp, regions, inv_count, down)


def _region_rows(r: _Region, a: int, b: int) -> np.ndarray:
    """Logits of region rows ``[a, b)`` (region coordinates), full region width: (C, b-a, x1-x0)."""
    return resample_rows(r.u, r.rows, a, b, finite=r.finite)


def _scale_rows(work: _ScaleWork, a: int, b: int, take_exp: bool) -> np.ndarray:
    """exp-scores (window-averaged) of rows ``[a, b)`` of the resized image: (C, b-a, w)."""
    sp = work.sp
    if work.inv_count is None:
        out = _region_rows(work.regions[0], a, b)
        if take_exp:
            np.exp(out, out=out)
        return out
    c = work.regions[0].u.shape[0]
    out = np.zeros((c, b - a, sp.size[1]), np.float32)
    for r in work.regions:
        ra, rb = max(a, r.y0), min(b, r.y1)
        if ra >= rb:
            continue
        part = _region_rows(r, ra - r.y0, rb - r.y0)
        np.exp(part, out=part)
        out[:, ra - a : rb - a, r.x0 : r.x1] += part
    out *= work.inv_count[a:b]
    return out


@dataclass(frozen=True)
class _Resample:
    """Bilinear map of a (C, h, w) score map onto (C, out_h, out_w), applied by row blocks."""

    ch: AxisCoeffs
    cw: AxisCoeffs
    out_w: int
    align_corners: bool
    finite: bool  # scores known finite: banded GEMMs; else exact gathers (inf stays local)

    @classmethod
    def make(cls, size: tuple[int, int], out: tuple[int, int], ac: bool, finite: bool) -> "_Resample":
        return cls(axis_coeffs(size[0], out[0], ac), axis_coeffs(size[1], out[1], ac), out[1],
                   ac, finite)

    def block(self, x: np.ndarray, offset: int, start: int, stop: int) -> np.ndarray:
        """Output rows ``[start, stop)`` from ``x`` holding input rows ``[offset, ...)``.

        Rows go first when the map shrinks along H, else columns: decided by the map, not by
        the block, so every block (of any size) does the same arithmetic.
        """
        if len(self.ch.i0) < int(self.ch.i1.max()) + 1:  # fewer output than input rows
            return self._cols(self._rows(x, offset, start, stop))
        return self._rows(self._cols(x), offset, start, stop)

    def _rows(self, x: np.ndarray, offset: int, start: int, stop: int) -> np.ndarray:
        return resample_rows(x, self.ch, start, stop, offset, self.finite)

    def _cols(self, x: np.ndarray) -> np.ndarray:
        # A block holds whole rows: OpenCV's horizontal pass may do them (row-count independent).
        return resample_last(x, self.cw, self.out_w, self.align_corners, self.finite,
                             whole_rows=True)


def _source_rows(works: list[_ScaleWork], start: int, stop: int, take_exp: bool) -> np.ndarray:
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


class _Argmax:
    """Running argmax over channel chunks (ties keep the lower class, like ``argmax``)."""

    def __init__(self, size: tuple[int, int], with_confidence: bool, softmax: bool) -> None:
        self.best = np.full(size, -np.inf, np.float32)
        self.labels = np.zeros(size, np.int32)
        self.total = np.zeros(size, np.float32) if with_confidence else None
        self.softmax = softmax  # scores are logits: total holds sum(exp(l - best))

    def update(self, scores: np.ndarray, c0: int, r0: int) -> None:
        """Fold in ``scores`` (C, rows, W) of classes ``c0..`` for rows ``r0..``."""
        r1 = r0 + scores.shape[1]
        best = self.best[r0:r1]
        cmax = scores.max(axis=0)
        carg = np.zeros(cmax.shape, np.int32)
        for k in range(scores.shape[0] - 1, 0, -1):  # descending: the lowest tying class wins
            np.putmask(carg, scores[k] == cmax, k)
        carg += c0
        better = cmax > best
        np.putmask(self.labels[r0:r1], better, carg)
        if self.total is not None:
            total = self.total[r0:r1]
            if self.softmax:
                new_best = np.maximum(best, cmax)
                total *= np.exp(best - new_best)
                scores = scores - new_best
                np.exp(scores, out=scores)
                total += scores.sum(axis=0)
            else:
                total += scores.sum(axis=0)
        np.maximum(best, cmax, out=best)

    def confidence(self) -> np.ndarray | None:
        if self.total is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = (1.0 / self.total) if self.softmax else self.best / self.total
        return np.nan_to_num(conf, nan=0.0, posinf=1.0).astype(np.float32)


def merge(plan: SegPlan, outputs: list[dict[str, np.ndarray]]) -> MergeResult:
    """The task's merge step: the passes' ``logits`` -> labels (and confidence if planned)."""
    return merge_segmentation(plan, [o[LOGITS] for o in outputs])


def merge_segmentation(
    plan: SegPlan,
    logits: list[np.ndarray],
    *,
    with_confidence: bool | None = None,
    memory_budget: int = MEMORY_BUDGET,
    block_bytes: int = BLOCK_BYTES,
) -> MergeResult:
    """Combine the passes' logits (each ``(C, h/4, w/4)``, plan order) into the label map.

    Row blocks of about ``block_bytes`` (see the module docstring); channel chunks keep the
    prepared 1/4-resolution work within ``memory_budget``. ``with_confidence`` defaults to the
    plan's ``confidence``.
    """
    if with_confidence is None:
        with_confidence = plan.confidence
    n_cls = logits[0].shape[0]
    H, W = plan.original_size
    Hs, Ws = plan.source_size
    sp0 = plan.scales[0]
    fast = (
        len(plan.scales) == 1 and sp0.windows is None and sp0.size == plan.source_size
        and plan.source_size == plan.original_size
    )
    lip = plan.source_size != plan.original_size
    # Memory per channel: W-resampled 1/4-res regions, plus LIP's whole source-size score map.
    per_channel = 4 * sum(
        math.ceil(s.pass_size[0] / plan.output_stride) * s.size[1] * s.n_regions
        for s in plan.scales
    ) + (4 * Hs * Ws if lip else 0)
    chunk = max(1, min(n_cls, memory_budget // max(1, per_channel)))
    widest = max([W, Ws] + [s.size[1] for s in plan.scales])
    ratio = max([1.0] + [s.size[0] / Hs for s in plan.scales])  # scale rows per source row

    regions_per_scale = [
        [_region_logits(plan, logits, sp.first_pass + r * plan.passes_per_region)
         for r in range(sp.n_regions)]
        for sp in plan.scales
    ]
    # GEMMs need every logit finite and every exp-score sum too (see EXP_SAFE).
    flat = [r for regs in regions_per_scale for r in regs]
    top, bottom = max(float(r.max()) for r in flat), min(float(r.min()) for r in flat)
    finite = bool(math.isfinite(bottom) and math.isfinite(top)
                  and top + math.log(len(plan.scales)) < EXP_SAFE)
    acc = _Argmax((H, W), with_confidence, softmax=fast)
    for c0 in range(0, n_cls, chunk):
        c1 = min(n_cls, c0 + chunk)
        works = [_prepare_scale(plan, sp, [r[c0:c1] for r in regs], finite)
                 for sp, regs in zip(plan.scales, regions_per_scale)]
        rows = max(1, int(block_bytes // (4 * (c1 - c0) * widest * ratio)))
        if not lip:
            def block(r0: int, c0: int = c0, works: list[_ScaleWork] = works) -> None:
                r1 = min(H, r0 + rows)
                acc.update(_source_rows(works, r0, r1, take_exp=not fast), c0, r0)

            parallel_map(block, range(0, H, rows))  # blocks write disjoint rows of acc
            continue
        source = np.empty((c1 - c0, Hs, Ws), np.float32)

        def source_block(r0: int, works: list[_ScaleWork] = works) -> None:
            r1 = min(Hs, r0 + rows)
            source[:, r0:r1] = _source_rows(works, r0, r1, take_exp=True)

        parallel_map(source_block, range(0, Hs, rows))
        final = _Resample.make((Hs, Ws), (H, W), plan.align_corners, finite)
        rows_out = max(1, int(block_bytes // (4 * (c1 - c0) * max(W, Ws) * max(1.0, Hs / H))))

        def final_block(r0: int, c0: int = c0) -> None:
            r1 = min(H, r0 + rows_out)
            a, b = band(final.ch, r0, r1)
            acc.update(final.block(source[:, a:b], a, r0, r1), c0, r0)

        parallel_map(final_block, range(0, H, rows_out))
    return MergeResult(labels=acc.labels, confidence=acc.confidence())
