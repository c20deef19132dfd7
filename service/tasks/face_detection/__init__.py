"""Face detection (``POST /faces``; and the faces of ``/landmarks`` when a request gives none):
MediaPipe BlazeFace served like every model.

resolve (threshold, most faces, tiling levels) -> plan (the image and its tiles letterboxed into
the input square, one batch) -> merge (MediaPipe's decoding per pass, cut faces dropped, weighted
NMS over all passes) -> respond (boxes, scores, keypoints, overlay).
"""

from __future__ import annotations

from service.tasks.common import JSON, TaskDef
from service.tasks.face_detection import merge, plan, respond
from service.tasks.face_detection.schemas import FaceDetectOptions, FacesJsonRequest, FacesResponse

TASK = TaskDef(
    name="face_detection", options=FaceDetectOptions, json_request=FacesJsonRequest,
    response=FacesResponse, extras=(), media_types=(JSON,),
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
)
