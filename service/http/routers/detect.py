"""``POST /detect``: objects in one image (HRNetV2p Faster R-CNN)."""

from __future__ import annotations

from service.http.task_route import task_router
from service.tasks import detection

router = task_router(
    detection.TASK, "/detect", tags=["detection"], operation_id="detect",
    summary="Object detection",
    description="Boxes, classes and scores of the objects in the image, in original-image "
    "pixels. Official test procedure: resize to fit 1333x800 (``max_size``), pad to a multiple "
    "of 32, score > 0.05, per-class NMS 0.5, at most 100 boxes. Options narrow the output "
    "(``classes``, ``score_threshold``, ``max_detections``) or add test-time augmentation "
    "(``scales``, ``flip``, merged by ``merge`` = ``nms`` or ``wbf``).",
)
