"""Semantic segmentation (``POST /segment``): the official multi-scale + flip test procedure.

resolve (options + protocol defaults) -> plan (scales, windows, flips) -> merge (official
ensembling, row-blocked, begun during the passes when there are several scales; or the same as a
graph run by the backend: ``merge_graph``, after the passes or, through Triton, together with
them on the server) -> respond
(JSON with class stats / RLE / PNGs, or the label map as a PNG, raw bytes or .npy).
"""

from __future__ import annotations

from service.contract import SegmentationMetadata
from service.runtime import cpu
from service.runtime.backends.providers import CPU, runs_on_gpu
from service.runtime.runner import InferenceRunner
from service.tasks.common import TaskDef
from service.tasks.segmentation import merge, merge_early, merge_graph, plan, respond
from service.tasks.segmentation.schemas import SegmentOptions, SegmentRequest, SegmentResponse


def _cores_free_during_inference(meta: SegmentationMetadata, runner: InferenceRunner) -> bool:
    """Whether the network leaves this process's cores free: it runs elsewhere (Triton), on a
    GPU, or ONNX Runtime has fewer intra-op threads than the process has CPUs."""
    providers = runner.backend.providers().get(meta.name, [CPU])
    if runs_on_gpu(providers) or any(p.startswith("triton:") for p in providers):
        return True
    threads = runner.settings.ort_intra_threads
    return 0 < threads < cpu.available()


def early_merge(p: plan.SegPlan, meta: SegmentationMetadata,
                runner: InferenceRunner) -> merge_early.EarlyMerge | None:
    """The gateway's merge begun during the passes (setting ``early_merge``; ``auto``: where
    cores stay free during inference), unless the backend merges (``merge_graph``) or the plan
    has nothing to sum early (one scale, LIP)."""
    mode = runner.settings.early_merge
    if mode == "off" or len(p.scales) < 2 or merge_graph.wants_device_merge(meta, runner):
        return None
    if mode == "auto" and not _cores_free_during_inference(meta, runner):
        return None
    m = merge_early.EarlyMerge(p)
    return m if m.sums_early else None


TASK = TaskDef(
    name="segmentation", options=SegmentOptions, json_request=SegmentRequest,
    response=SegmentResponse, extras=(), media_types=respond.MEDIA_TYPES,
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
    device_merge=merge_graph.device_merge, served_merge=merge_graph.served_merge,
    early_merge=early_merge,
)
