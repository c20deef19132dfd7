"""Semantic segmentation (``POST /segment``): the official multi-scale + flip test procedure.

resolve (options + protocol defaults) -> plan (scales, windows, flips) -> merge (official
ensembling, row-blocked, begun during the passes when there are several scales; or the same as a
graph run by the backend: ``merge_graph``, after the passes or, through Triton, together with
them on the server) -> respond
(JSON with class stats / RLE / PNGs, or the label map as a PNG, raw bytes or .npy).
"""

from __future__ import annotations

from service.contract import SegmentationMetadata
from service.runtime.runner import InferenceRunner
from service.tasks.common import TaskDef
from service.tasks.segmentation import merge, merge_graph, plan, respond
from service.tasks.segmentation.schemas import SegmentOptions, SegmentRequest, SegmentResponse


def early_merge(p: plan.SegPlan, meta: SegmentationMetadata,
                runner: InferenceRunner) -> merge.EarlyMerge | None:
    """The gateway's merge begun during the passes (setting ``early_merge``), unless the backend
    merges (``merge_graph``) or the plan has nothing to sum early (one scale, LIP)."""
    if not runner.settings.early_merge or merge_graph.wants_device_merge(meta, runner):
        return None
    m = merge.EarlyMerge(p)
    return m if m.sums_early else None


TASK = TaskDef(
    name="segmentation", options=SegmentOptions, json_request=SegmentRequest,
    response=SegmentResponse, extras=(), media_types=respond.MEDIA_TYPES,
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
    device_merge=merge_graph.device_merge, served_merge=merge_graph.served_merge,
    early_merge=early_merge,
)
