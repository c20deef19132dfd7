"""Frozen copy of the segmentation merge as it was before the row-tiled rewrite (git 36d1746:
service/tta.py ``merge_segmentation`` and the service/resize.py helpers it used), kept only so
bench_segment.py can time old vs new side by side in one run. Not used by the service.
"""
# ruff: noqa
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from service.tta import MergeResult, ScalePlan, SegPlan

MEMORY_BUDGET = 384 * 1024 * 1024

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
