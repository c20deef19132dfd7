"""``POST /faces``: the faces in one image (MediaPipe BlazeFace)."""

from __future__ import annotations

from service.http.task_route import task_router
from service.tasks import face_detection

router = task_router(
    face_detection.TASK, "/faces", tags=["faces"], operation_id="faces",
    summary="Face detection",
    description="Faces in the image with their scores and six keypoints (eyes, nose tip, mouth "
    "centre, ear tragions), in original-image pixels. MediaPipe's procedure: the image "
    "letterboxed into the detector's input, sigmoid scores >= ``score_threshold``, weighted NMS "
    "(IoU 0.3); ``tiles`` adds overlapping tiles (one batch) for small faces in large photos.",
)
