"""``POST /segment``: semantic segmentation of one image (the official multi-scale + flip test)."""

from __future__ import annotations

from service.http.task_route import task_router
from service.tasks import segmentation

router = task_router(
    segmentation.TASK, "/segment", tags=["segmentation"], operation_id="segment",
    summary="Semantic segmentation (official multi-scale + flip procedure)",
    description="Segment one image. Options: model, scales (list or 'multi'), flip, window; "
    "outputs: label_map, rle, confidence, overlay, label_ids. ``Accept: image/png`` answers the "
    "label map PNG itself; ``application/octet-stream`` its raw bytes (uint8, or uint16 past 256 "
    "classes; shape and dtype in ``X-Label-Map-Shape`` and ``X-Label-Map-Dtype``); "
    "``application/x-npy`` a NumPy .npy file.",
)
