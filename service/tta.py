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
Large work is split into channel chunks with a running argmax, bounding memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from service.metadata import ModelMetadata, SegmentationProtocol
from service.resize import axis_coeffs, resize_bilinear, resize_uint8_opencv, resize_with

Variant = Literal["cityscapes", "base"]

# Bytes of float32 full-resolution work allowed at once (per channel chunk).
MEMORY_BUDGET = 384 * 1024 * 1024


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

    Per scale, per region: the pass, then (with flip) its mirror image.
    """
    src = source_image(rgb, plan)
    passes: list[np.ndarray] = []
    for sp in plan.scales:
        img = resize_bilinear(src, sp.size, layout="hwc")  # OpenCV INTER_LINEAR convention
        chw = np.ascontiguousarray(img.transpose(2, 0, 1))
        regions = [Window(0, sp.size[0], 0, sp.size[1])] if sp.windows is None else sp.windows
        for win in regions:
            crop = chw[:, win.y0 : min(win.y1, sp.size[0]), win.x0 : min(win.x1, sp.size[1])]
            ph, pw = sp.pass_size
            if crop.shape[1:] != (ph, pw):
                padded = np.zeros((3, ph, pw), np.float32)
                padded[:, : crop.shape[1], : crop.shape[2]] = crop
                crop = padded
            else:
                crop = np.ascontiguousarray(crop)
            passes.append(crop)
            if plan.flip:
                passes.append(np.ascontiguousarray(crop[:, :, ::-1]))
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


def _upsample_head(x: np.ndarray, out_size: tuple[int, int], keep: tuple[int, int], ac: bool) -> np.ndarray:
    """Upsample ``x`` (C,h,w) to ``out_size`` but compute only the top-left ``keep`` part."""
    ch = axis_coeffs(x.shape[1], out_size[0], ac).head(keep[0])
    cw = axis_coeffs(x.shape[2], out_size[1], ac).head(keep[1])
    return resize_with(x, ch, cw, 1, 2)


def _scale_scores(plan: SegPlan, sp: ScalePlan, region_logits: list[np.ndarray]) -> np.ndarray:
    """exp-scores of one scale at its resized size ``sp.size`` for a chunk of channels."""
    ac = plan.align_corners
    h, w = sp.size
    if sp.windows is None:
        out = _upsample_head(region_logits[0], sp.pass_size, (h, w), ac)
        np.exp(out, out=out)
        return out
    k = region_logits[0].shape[0]
    acc = np.zeros((k, *sp.canvas), np.float32)
    count = np.zeros(sp.canvas, np.float32)
    for win, lg in zip(sp.windows, region_logits):
        vh, vw = win.y1 - win.y0, win.x1 - win.x0
        part = _upsample_head(lg, sp.pass_size, (vh, vw), ac)
        np.exp(part, out=part)
        acc[:, win.y0 : win.y1, win.x0 : win.x1] += part
        count[win.y0 : win.y1, win.x0 : win.x1] += 1.0
    acc /= count
    return acc[:, :h, :w]


def merge_segmentation(
    plan: SegPlan,
    logits: list[np.ndarray],
    *,
    with_confidence: bool = False,
    memory_budget: int = MEMORY_BUDGET,
) -> MergeResult:
    """Combine the passes' logits (each ``(C, h/4, w/4)``, plan order) into the label map."""
    n_cls = logits[0].shape[0]
    H, W = plan.original_size
    sp0 = plan.scales[0]
    fast = (
        len(plan.scales) == 1 and sp0.windows is None and sp0.size == plan.source_size
        and plan.source_size == plan.original_size
    )
    # Per channel of a chunk: the final map plus the largest intermediate (about 3 maps).
    per_channel = 4 * H * W * 3 + 4 * max(s.canvas[0] * s.canvas[1] for s in plan.scales) * 2
    chunk = max(1, min(n_cls, memory_budget // max(1, per_channel)))

    regions_per_scale = [
        [_region_logits(plan, logits, sp.first_pass + r * plan.passes_per_region)
         for r in range(sp.n_regions)]
        for sp in plan.scales
    ]
    best = np.full((H, W), -np.inf, np.float32)
    labels = np.zeros((H, W), np.int32)
    total = np.zeros((H, W), np.float32) if with_confidence else None
    for c0 in range(0, n_cls, chunk):
        c1 = min(n_cls, c0 + chunk)
        if fast:
            scores = _upsample_head(regions_per_scale[0][0][c0:c1], sp0.pass_size, sp0.size,
                                    plan.align_corners)  # logits; exp deferred
        else:
            scores = None
            for sp, regs in zip(plan.scales, regions_per_scale):
                s = _scale_scores(plan, sp, [r[c0:c1] for r in regs])
                if sp.size != plan.source_size:
                    s = resize_bilinear(s, plan.source_size, align_corners=plan.align_corners)
                if scores is None:
                    scores = s  # a fresh array (or a view of one): safe to accumulate into
                else:
                    scores += s
            if plan.source_size != plan.original_size:
                scores = resize_bilinear(scores, plan.original_size, align_corners=plan.align_corners)
        assert scores is not None
        cmax = scores.max(axis=0)
        carg = scores.argmax(axis=0).astype(np.int32) + c0
        better = cmax > best  # strict: ties keep the lower class index, like argmax
        labels[better] = carg[better]
        if with_confidence:
            if fast:  # running softmax: total holds sum(exp(l - best))
                new_best = np.maximum(best, cmax)
                assert total is not None
                total *= np.exp(best - new_best)
                total += np.exp(scores - new_best).sum(axis=0)
            else:
                total += scores.sum(axis=0)
        np.maximum(best, cmax, out=best)
    conf = None
    if with_confidence:
        assert total is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = (1.0 / total) if fast else best / total
        conf = np.nan_to_num(conf, nan=0.0, posinf=1.0).astype(np.float32)
    return MergeResult(labels=labels, confidence=conf)
