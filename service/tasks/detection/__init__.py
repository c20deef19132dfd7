"""Object detection (``POST /detect``): HRNetV2p Faster R-CNN, Mask R-CNN, Cascade R-CNN and
Cascade Mask R-CNN with the official test resize.

resolve (thresholds, classes, resize limits, masks) -> plan (resize + pad per scale and flip) ->
merge (boxes to original pixels, NMS / WBF across TTA passes, masks pasted by the origin's
official rule: ``masks.py``) -> respond (filtered boxes, COCO RLE / polygons, overlay).
"""

from __future__ import annotations

from service.tasks.common import JSON, TaskDef
from service.tasks.detection import merge, plan, respond
from service.tasks.detection.schemas import DetectOptions, DetectRequest, DetectResponse

TASK = TaskDef(
    name="detection", options=DetectOptions, json_request=DetectRequest,
    response=DetectResponse, extras=(), media_types=(JSON,),
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
    pixel_budget="max_detection_pixels",
)
