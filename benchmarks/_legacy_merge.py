"""Frozen copy of the segmentation merge as it was before the row-tiled rewrite
(``merge_segmentation`` working on whole full-resolution maps), kept only so
bench_segment.py can time old vs new side by side in one run. Not used by the service.
"""
# ruff: noqa
from __future__ import annotations

import numpy as np

# The exact 2-tap resize helpers are unchanged since then; only the merge around them is frozen.
from service.imaging.resize import axis_coeffs, resize_bilinear, resize_with
from service.tasks.segmentation.merge import MergeResult
from service.tasks.segmentation.scores import region_logits
from service.tasks.segmentation.plan import ScalePlan, SegPlan

MEMORY_BUDGET = 384 * 1024 * 1024


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


def legacy_merge_segmentation(
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
        [region_logits(plan, logits, sp.first_pass + r * plan.passes_per_region)
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
