"""The segmentation merge run by the backend, where the network runs (the merge graph).

:func:`merge_feed` turns a plan and its passes' 1/4-resolution logits into the inputs of the
merge graph (``<entry>/1/merge.onnx``, written by ``model_export/onnx/merge.py``): the regions'
logits, padded to one shape, and 2-tap gather tables made with the very coefficients of the
gateway's own merge (:func:`service.imaging.resize.axis_coeffs`: OpenCV half-pixel or PyTorch
corner-aligned per the model's ``align_corners``). The graph then does all full-resolution float
work (upsampling, ``exp``, window averaging, resizes, the sum over scales, argmax, confidence)
and answers only the ``uint8`` label map (and the confidence when asked).

:func:`device_merge` is the task's merge step when the setting ``merge_on_device`` and the
backend allow it (``auto``: where the model runs on a GPU provider); otherwise, or when the
scores could overflow float32 (the gateway's merge then uses its exact gathers), it answers None
and the gateway merges (:mod:`service.tasks.segmentation.merge`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Sequence

import numpy as np

from service.contract import (
    IMAGE, LOGITS, MERGE_OUTPUTS, SegmentationMetadata, merge_model_name,
)
from service.imaging.resize import AxisCoeffs, axis_coeffs
from service.runtime.backends.base import SERVED_MERGE_CAPABILITY
from service.runtime.backends.providers import CPU, runs_on_gpu
from service.runtime.runner import InferenceRunner, LazyPasses, Pass
from service.tasks.segmentation.merge import MergeResult
from service.tasks.segmentation.scores import EXP_SAFE
from service.tasks.segmentation.plan import ScalePlan, SegPlan, Window
from service.timings import Timings

log = logging.getLogger("service.tasks.segmentation")

#: Most classes a uint8 label map holds.
MAX_GRAPH_CLASSES = 256


def _taps(c: AxisCoeffs, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``[2, n]`` indices and weights of ``c``, zero-padded (index 0, weight 0) to ``n``."""
    idx = np.zeros((2, n), np.int64)
    w = np.zeros((2, n), np.float32)
    k = len(c.i0)
    idx[0, :k], idx[1, :k], w[0, :k], w[1, :k] = c.i0, c.i1, c.w0, c.w1
    return idx, w


def _identity(n: int) -> AxisCoeffs:
    r = np.arange(n, dtype=np.int64)
    return AxisCoeffs(r, r, np.ones(n, np.float32), np.zeros(n, np.float32))


def _counts(spans: set[tuple[int, int]], size: int) -> np.ndarray:
    """How many window spans cover each position of an axis of ``size`` (windows form a grid,
    so a pixel's window count is its row count times its column count)."""
    count = np.zeros(size, np.float32)
    for a, b in spans:
        count[a:min(b, size)] += 1.0
    return count


def _down(c: AxisCoeffs, start: int, stop: int, inv: np.ndarray, n: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Source-axis taps of a region covering canvas ``[start, stop)``: indices into the region's
    pass, weights times the reciprocal window count, zero outside the region."""
    idx = np.zeros((2, len(c.i0)), np.int64)
    w = np.zeros((2, len(c.i0)), np.float32)
    for t, (i, wt) in enumerate(((c.i0, c.w0), (c.i1, c.w1))):
        inside = (i >= start) & (i < stop)
        idx[t] = np.clip(i - start, 0, n - 1)
        w[t] = np.where(inside, wt * inv[np.clip(i, 0, len(inv) - 1)], np.float32(0.0))
    return idx, w


def _regions(plan: SegPlan) -> list[tuple[int, Window, ScalePlan]]:
    """(first pass, window clipped to its scale's image, scale) of every region that adds to
    the merge, in plan order (a window entirely in the padding adds nothing)."""
    regions = []
    for sp in plan.scales:
        h, w = sp.size
        wins = [Window(0, h, 0, w)] if sp.windows is None else sp.windows
        for r, win in enumerate(wins):
            y1, x1 = min(win.y1, h), min(win.x1, w)
            if y1 > win.y0 and x1 > win.x0:
                regions.append((plan.region_first(sp, r), Window(win.y0, y1, win.x0, x1), sp))
    return regions


def _exp_limit(plan: SegPlan) -> float:
    """The largest logit whose ``exp`` summed over the plan's scales stays inside float32."""
    return EXP_SAFE - math.log(len(plan.scales))


def merge_tables(plan: SegPlan, sizes: list[tuple[int, int]], n_cls: int, *,
                 with_confidence: bool) -> dict[str, np.ndarray]:
    """The merge graph's inputs other than the logits: the gather tables of ``plan`` whose
    regions' passes have 1/4-resolution logits of ``sizes`` (``(h, w)`` per region of
    :func:`_regions`)."""
    ac = plan.align_corners
    Hs, Ws = plan.source_size
    H, W = plan.original_size
    regions = _regions(plan)
    w4 = max(cw for _, cw in sizes)
    ph = max(sp.pass_size[0] for sp in plan.scales)
    pw = max(sp.pass_size[1] for sp in plan.scales)
    n = len(regions)
    feed: dict[str, np.ndarray] = {"flip_cols": np.zeros((n, w4), np.int64)}
    for key, shape in (("up_rows", ph), ("up_cols", pw), ("down_rows", Hs), ("down_cols", Ws)):
        feed[key] = np.zeros((n, 2, shape), np.int64)
        feed[key.replace("rows", "row_w").replace("cols", "col_w")] = np.zeros((n, 2, shape),
                                                                               np.float32)
    feed["down_identity"] = np.zeros(n, bool)
    counts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, ((_, win, sp), (ch, cw)) in enumerate(zip(regions, sizes)):
        feed["flip_cols"][k] = np.clip(cw - 1 - np.arange(w4), 0, w4 - 1)
        feed["up_rows"][k], feed["up_row_w"][k] = _taps(axis_coeffs(ch, sp.pass_size[0], ac), ph)
        feed["up_cols"][k], feed["up_col_w"][k] = _taps(axis_coeffs(cw, sp.pass_size[1], ac), pw)
        if id(sp) not in counts:
            h, w = sp.size
            if sp.windows is None:
                counts[id(sp)] = (np.ones(h, np.float32), np.ones(w, np.float32))
            else:  # the official division by the count: 1, 1/2 or 1/4, exact in float32
                counts[id(sp)] = (1.0 / _counts({(v.y0, v.y1) for v in sp.windows}, h),
                                  1.0 / _counts({(v.x0, v.x1) for v in sp.windows}, w))
        inv_y, inv_x = counts[id(sp)]
        same = sp.size == plan.source_size
        feed["down_identity"][k] = same and sp.windows is None  # the pass's top-left crop
        cy = _identity(Hs) if same else axis_coeffs(sp.size[0], Hs, ac)
        cx = _identity(Ws) if same else axis_coeffs(sp.size[1], Ws, ac)
        feed["down_rows"][k], feed["down_row_w"][k] = _down(cy, win.y0, win.y1, inv_y, ph)
        feed["down_cols"][k], feed["down_col_w"][k] = _down(cx, win.x0, win.x1, inv_x, pw)
    perm = np.arange(n_cls, dtype=np.int64)
    for i, j in plan.flip_pairs:
        perm[i], perm[j] = j, i
    lip = plan.source_size != plan.original_size
    fr = axis_coeffs(Hs, H, ac) if lip else _identity(H)
    fc = axis_coeffs(Ws, W, ac) if lip else _identity(W)
    feed["final_rows"], feed["final_row_w"] = _taps(fr, H)
    feed["final_cols"], feed["final_col_w"] = _taps(fc, W)
    sp0 = plan.scales[0]
    fast = (len(plan.scales) == 1 and sp0.windows is None and sp0.size == plan.source_size
            and plan.source_size == plan.original_size)
    flag = lambda v: np.array([bool(v)])  # noqa: E731 - [1]: Triton has no scalar inputs
    feed.update(flip=flag(plan.flip), channel_perm=perm, take_exp=flag(not fast),
                with_confidence=flag(with_confidence), final_identity=flag(not lip))
    return feed


def merge_feed(plan: SegPlan, logits: list[np.ndarray], *,
               with_confidence: bool | None = None) -> dict[str, np.ndarray] | None:
    """The merge graph's inputs for ``plan`` and its passes' logits (each ``(C, h/4, w/4)``, plan
    order); None where the graph would not be exact (scores that may overflow float32 or are not
    finite, or more classes than a uint8 label holds)."""
    if with_confidence is None:
        with_confidence = plan.confidence
    n_cls = int(logits[0].shape[0])
    if n_cls > MAX_GRAPH_CLASSES:
        return None
    top = max(float(np.max(lg)) for lg in logits)
    bottom = min(float(np.min(lg)) for lg in logits)
    if not (math.isfinite(top) and math.isfinite(bottom) and top < _exp_limit(plan)):
        return None
    regions = _regions(plan)
    sizes = [tuple(logits[p].shape[1:]) for p, _, _ in regions]
    feed = merge_tables(plan, sizes, n_cls, with_confidence=with_confidence)
    h4 = max(h for h, _ in sizes)
    w4 = max(w for _, w in sizes)
    n = len(regions)
    feed["logits"] = np.zeros((n, n_cls, h4, w4), np.float32)
    feed["logits_flipped"] = np.zeros((n, n_cls, h4, w4) if plan.flip else (n, n_cls, 1, w4),
                                      np.float32)
    for k, ((p, _, _), (ch, cw)) in enumerate(zip(regions, sizes)):
        feed["logits"][k, :, :ch, :cw] = logits[p]
        if plan.flip:
            feed["logits_flipped"][k, :, :ch, :cw] = logits[p + 1]
    return feed


def served_feed(plan: SegPlan, passes: Sequence[Pass], n_cls: int) -> dict[str, np.ndarray]:
    """The inputs of the served merge (Triton's ``<model>__segment``, see
    :mod:`model_export.served_merge`): every pass's pixels in one flat array with their shapes,
    each region's pass (and mirrored pass, -1 without flip), the logit sizes the tables assume
    (``ceil(pass / output_stride)``, checked by the server against the network's), the
    overflow bound and the merge graph's tables."""
    regions = _regions(plan)
    stride = plan.output_stride
    sizes = [(-(-sp.pass_size[0] // stride), -(-sp.pass_size[1] // stride))
             for _, _, sp in regions]
    feed = merge_tables(plan, sizes, n_cls, with_confidence=plan.confidence)
    def shape(i: int) -> tuple[int, ...]:  # without making a lazy pass
        if isinstance(passes, LazyPasses):
            return next(s for name, s, _ in passes.signature(i) if name == IMAGE)
        return np.shape(passes[i][IMAGE])

    shapes = np.array([shape(i) for i in range(len(passes))], np.int64).reshape(-1, 3)
    pixels = np.empty(int(np.prod(shapes, axis=1).sum()), np.float32)
    at = 0
    for i in range(len(passes)):  # one pass at a time: never two copies of all the inputs
        image = passes[i][IMAGE]
        pixels[at:at + image.size] = image.reshape(-1)
        at += image.size
    feed.update(
        pixels=pixels, pass_shapes=shapes,
        region_pass=np.array([p for p, _, _ in regions], np.int64),
        region_flipped_pass=np.array([p + 1 if plan.flip else -1 for p, _, _ in regions],
                                     np.int64),
        region_logit_size=np.array(sizes, np.int64).reshape(-1, 2),
        exp_limit=np.array([_exp_limit(plan)], np.float32))
    return feed


def wants_device_merge(meta: SegmentationMetadata, runner: InferenceRunner) -> bool:
    """Whether this model's merge runs in the backend: the setting ``merge_on_device`` (``on``,
    ``off``, ``auto``: where the model runs on a GPU provider), and a backend that loaded the
    model's merge graph."""
    mode = runner.settings.merge_on_device
    if mode == "off" or meta.segmentation.merge_graph is None:
        return False
    merges = getattr(runner.backend, "merge_models", None)
    if merges is None or meta.name not in merges():
        return False
    if mode == "on":
        return True
    return runs_on_gpu(runner.backend.providers().get(meta.name, [CPU]))


async def device_merge(plan: SegPlan, outputs: list[dict[str, np.ndarray]],
                       meta: SegmentationMetadata, runner: InferenceRunner) -> MergeResult | None:
    """The task's merge in the backend's merge graph; None: the gateway merges instead."""
    if not wants_device_merge(meta, runner):
        return None
    feed = await asyncio.to_thread(merge_feed, plan, [o[LOGITS] for o in outputs])
    if feed is None:
        log.debug("%s: scores may overflow float32; merged in the gateway", meta.name)
        return None
    out = await runner.backend.infer(merge_model_name(meta.name), feed)
    labels, confidence = out[MERGE_OUTPUTS[0]], out[MERGE_OUTPUTS[1]]
    return MergeResult(labels=labels, confidence=confidence if plan.confidence else None)


def served_merge_model(meta: SegmentationMetadata, runner: InferenceRunner) -> str | None:
    """The backend model that runs this model's passes *and* merge in one call (Triton's
    ``<model>__segment``) when the setting ``merge_on_device`` wants it (``on``; ``auto``: where
    the model runs on a GPU, as for the device merge: on Triton's CPU instances the merge graph
    measured slower than the gateway's merge, benchmarks/bench_served_merge.py); None: not here."""
    mode = runner.settings.merge_on_device
    if mode == "off" or meta.segmentation.merge_graph is None:
        return None
    if len(meta.labels) > MAX_GRAPH_CLASSES:
        return None
    offered = getattr(runner.backend, SERVED_MERGE_CAPABILITY, None)
    model = offered(meta.name) if offered is not None else None
    if model is None or mode == "on":
        return model
    return model if runs_on_gpu(runner.backend.providers().get(meta.name, [CPU])) else None


async def served_merge(plan: SegPlan, passes: Sequence[Pass], meta: SegmentationMetadata,
                       runner: InferenceRunner, deadline: float, timings: Timings
                       ) -> MergeResult | None:
    """The passes run and merged where the network runs, in one backend call: the network's
    logits never reach the gateway, only the label map (and the confidence) does. None: not
    offered, or the scores could overflow float32 (the caller then runs and merges as usual)."""
    model = served_merge_model(meta, runner)
    if model is None:
        return None
    with timings.stage("preprocess"):
        feed = await asyncio.to_thread(served_feed, plan, passes, len(meta.labels))
    out = await runner.call(meta, model, feed, timings=timings, deadline=deadline)
    del feed
    if not bool(np.asarray(out["merged"]).reshape(-1)[0]):
        log.debug("%s: scores may overflow float32; merged in the gateway", meta.name)
        return None
    labels, confidence = out[MERGE_OUTPUTS[0]], out[MERGE_OUTPUTS[1]]
    return MergeResult(labels=labels, confidence=confidence if plan.confidence else None)


__all__ = ["device_merge", "merge_feed", "merge_tables", "served_feed", "served_merge",
           "served_merge_model", "wants_device_merge"]
