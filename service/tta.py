"""The official segmentation test procedure: plan the network passes, then merge their logits.

Plan (per scale ``s``; reference README, "Segmentation test procedure"):

* LIP (``resize_to_square``): the uint8 image is first resized straight to a square (aspect not
  kept) with OpenCV's 8-bit fixed-point arithmetic, reproduced bit-exactly; that square is the
  "source" image.
* long side ``int(base_size * s + 0.5)``, short side ``int(short * long_new / long + 0.5)``;
  OpenCV bilinear on the float image.
* ``cityscapes`` variant: ``s <= 1`` runs the whole resized image; ``s > 1`` slides windows of the
  crop size with stride = crop, shifting the last window back inside, never padding.
* ``base`` variant: a resized image whose long side <= the crop's short side is padded to the crop
  and run whole; otherwise it is padded up to the crop where smaller and covered by windows with
  stride ``int(2/3 crop)``, edge windows padded to the crop.
* Each window/whole pass also runs horizontally flipped when ``flip``.

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
exact 2-tap gathers. Many classes are split into channel chunks with a running argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from service.contract import ModelMetadata, SegmentationProtocol
from service.resize import (
    AxisCoeffs, axis_coeffs, band, resample_last, resample_rows, resize_finite,
    resize_uint8_opencv,
)

Variant = Literal["cityscapes", "base"]

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


@dataclass(frozen=True)
class Window:
    """A pass's region ``[y0:y1, x0:x1]`` of the scaled (possibly padded) image."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass
class ScalePlan:
    """The passes of one scale."""

    scale: float
    size: tuple[int, int]  # resized image (h, w)
    canvas: tuple[int, int]  # prediction canvas (>= size; padded size in the base variant)
    pass_size: tuple[int, int]  # network input (h, w) of every pass of this scale
    windows: list[Window] | None  # None: one whole-image pass (padded to pass_size)
    first_pass: int = 0  # index of this scale's first pass in the request's pass list

    @property
    def n_regions(self) -> int:
        return 1 if self.windows is None else len(self.windows)


@dataclass
class SegPlan:
    """Every network pass of one request, and how to merge them."""

    original_size: tuple[int, int]
    source_size: tuple[int, int]  # after LIP's square resize (else == original_size)
    scales: list[ScalePlan]
    flip: bool
    variant: Variant
    align_corners: bool
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def passes_per_region(self) -> int:
        return 2 if self.flip else 1

    @property
    def n_passes(self) -> int:
        return sum(s.n_regions for s in self.scales) * self.passes_per_region

    @property
    def n_pixels(self) -> int:
        """Network-input pixels of all passes together."""
        per_region = sum(s.n_regions * s.pass_size[0] * s.pass_size[1] for s in self.scales)
        return per_region * self.passes_per_region


def scaled_size(h: int, w: int, base_size: int, scale: float) -> tuple[int, int]:
    """The official ``multi_scale_aug`` size: long side ``int(base*s+0.5)``, aspect kept."""
    long_size = int(base_size * scale + 0.5)
    if h > w:
        new_h, new_w = long_size, int(w * long_size / h + 0.5)
    else:
        new_w, new_h = long_size, int(h * long_size / w + 0.5)
    return max(1, new_h), max(1, new_w)


def _cityscapes_windows(h: int, w: int, ch: int, cw: int) -> list[Window]:
    rows = int(math.ceil((h - ch) / ch)) + 1
    cols = int(math.ceil((w - cw) / cw)) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * ch + ch, h)
            x1 = min(c * cw + cw, w)
            out.append(Window(max(y1 - ch, 0), y1, max(x1 - cw, 0), x1))
    return out


def _base_windows(h: int, w: int, ch: int, cw: int) -> list[Window]:
    sh, sw = int(ch * 2.0 / 3.0), int(cw * 2.0 / 3.0)
    rows = int(math.ceil((h - ch) / sh)) + 1
    cols = int(math.ceil((w - cw) / sw)) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y0, x0 = r * sh, c * sw
            out.append(Window(y0, min(y0 + ch, h), x0, min(x0 + cw, w)))
    return out


def plan_segmentation(
    image_size: tuple[int, int],
    meta: ModelMetadata,
    *,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    variant: Variant | None = None,
) -> SegPlan:
    """Plan the passes for an image of ``image_size = (h, w)`` with the model's protocol."""
    proto: SegmentationProtocol | None = meta.segmentation
    if proto is None:
        raise ValueError(f"model {meta.name} has no segmentation protocol")
    scales = list(proto.scales if scales is None else scales)
    flip = proto.flip if flip is None else bool(flip)
    variant = variant or proto.window
    ch, cw = proto.crop_size
    src = image_size
    if proto.resize_to_square is not None:
        src = (proto.resize_to_square, proto.resize_to_square)
    plans: list[ScalePlan] = []
    first = 0
    per_region = 2 if flip else 1
    for s in scales:
        h, w = scaled_size(src[0], src[1], proto.base_size, s)
        if variant == "cityscapes":
            if s <= 1.0:
                sp = ScalePlan(s, (h, w), (h, w), (h, w), None)
            else:
                sp = ScalePlan(s, (h, w), (h, w), (min(ch, h), min(cw, w)),
                               _cityscapes_windows(h, w, ch, cw))
        else:
            if max(h, w) <= min(ch, cw):
                sp = ScalePlan(s, (h, w), (max(h, ch), max(w, cw)), (ch, cw), None)
            else:
                canvas = (max(h, ch), max(w, cw))
                sp = ScalePlan(s, (h, w), canvas, (ch, cw), _base_windows(*canvas, ch, cw))
        sp.first_pass = first
        first += sp.n_regions * per_region
        plans.append(sp)
    return SegPlan(
        original_size=tuple(image_size), source_size=tuple(src), scales=plans, flip=flip,
        variant=variant, align_corners=meta.align_corners,
        flip_pairs=[(int(i), int(j)) for i, j in meta.flip_pairs],
    )


# --------------------------------------------------------------------------------------------
# Passes (pixels)
# --------------------------------------------------------------------------------------------


def source_image(rgb: np.ndarray, plan: SegPlan) -> np.ndarray:
    """The float32 HWC pixel image the scales are taken from (LIP: the rounded square resize)."""
    if plan.source_size == plan.original_size:
        return rgb.astype(np.float32)
    # The official code resizes the *uint8* image (OpenCV fixed point) before normalising.
    return resize_uint8_opencv(rgb, plan.source_size).astype(np.float32)


def make_passes(rgb: np.ndarray, plan: SegPlan) -> list[np.ndarray]:
    """Network inputs (CHW float32 pixels, padding = 0 = the official ``-mean/std``) in plan order.

    Per scale, per region: the pass, then (with flip) its mirror image. Passes may be views (a
    window, a mirror) of the scale's image: the runner copies them into batches anyway.
    """
    src = np.ascontiguousarray(source_image(rgb, plan).transpose(2, 0, 1))
    passes: list[np.ndarray] = []
    for sp in plan.scales:
        chw = resize_finite(src, sp.size)  # OpenCV INTER_LINEAR convention (half-pixel)
        regions = [Window(0, sp.size[0], 0, sp.size[1])] if sp.windows is None else sp.windows
        for win in regions:
            crop = chw[:, win.y0 : min(win.y1, sp.size[0]), win.x0 : min(win.x1, sp.size[1])]
            ph, pw = sp.pass_size
            if crop.shape[1:] != (ph, pw):
                padded = np.zeros((3, ph, pw), np.float32)
                padded[:, : crop.shape[1], : crop.shape[2]] = crop
                crop = padded
            passes.append(crop)
            if plan.flip:
                passes.append(crop[:, :, ::-1])
    return passes


# --------------------------------------------------------------------------------------------
# Merge (logits -> labels)
# --------------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    labels: np.ndarray  # (H, W) int32 class index
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
        u = resample_last(lg, cw, sp.pass_size[1], ac, finite)
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

        The axis that shrinks the data goes first.
        """
        if x.shape[1] > stop - start:
            return self._cols(self._rows(x, offset, start, stop))
        return self._rows(self._cols(x), offset, start, stop)

    def _rows(self, x: np.ndarray, offset: int, start: int, stop: int) -> np.ndarray:
        return resample_rows(x, self.ch, start, stop, offset, self.finite)

    def _cols(self, x: np.ndarray) -> np.ndarray:
        return resample_last(x, self.cw, self.out_w, self.align_corners, self.finite)


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


def merge_segmentation(
    plan: SegPlan,
    logits: list[np.ndarray],
    *,
    with_confidence: bool = False,
    memory_budget: int = MEMORY_BUDGET,
    block_bytes: int = BLOCK_BYTES,
) -> MergeResult:
    """Combine the passes' logits (each ``(C, h/4, w/4)``, plan order) into the label map.

    Row blocks of about ``block_bytes`` (see the module docstring); channel chunks keep the
    prepared 1/4-resolution work within ``memory_budget``.
    """
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
        math.ceil(s.pass_size[0] / 4) * s.size[1] * s.n_regions for s in plan.scales
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
            for r0 in range(0, H, rows):
                r1 = min(H, r0 + rows)
                acc.update(_source_rows(works, r0, r1, take_exp=not fast), c0, r0)
            continue
        source = np.empty((c1 - c0, Hs, Ws), np.float32)
        for r0 in range(0, Hs, rows):
            r1 = min(Hs, r0 + rows)
            source[:, r0:r1] = _source_rows(works, r0, r1, take_exp=True)
        final = _Resample.make((Hs, Ws), (H, W), plan.align_corners, finite)
        rows = max(1, int(block_bytes // (4 * (c1 - c0) * max(W, Ws) * max(1.0, Hs / H))))
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            a, b = band(final.ch, r0, r1)
            acc.update(final.block(source[:, a:b], a, r0, r1), c0, r0)
    return MergeResult(labels=acc.labels, confidence=acc.confidence())
