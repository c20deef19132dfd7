"""Semantic segmentation (``POST /segment``): the official multi-scale + flip test procedure.

resolve (options + protocol defaults) -> plan (scales, windows, flips) -> merge (official
ensembling, row-blocked; or the same as a graph run by the backend: ``merge_graph``, after the
passes or, through Triton, together with them on the server) -> respond
(JSON with class stats / RLE / PNGs, or the label map as a PNG, raw bytes or .npy).
"""

from __future__ import annotations

from service.tasks.common import TaskDef
from service.tasks.segmentation import merge, merge_graph, plan, respond
from service.tasks.segmentation.schemas import SegmentOptions, SegmentRequest, SegmentResponse

TASK = TaskDef(
    name="segmentation", options=SegmentOptions, json_request=SegmentRequest,
    response=SegmentResponse, extras=(), media_types=respond.MEDIA_TYPES,
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
    device_merge=merge_graph.device_merge, served_merge=merge_graph.served_merge,
)
