"""``POST /landmarks``: facial landmarks of the faces of one image."""

from __future__ import annotations

from service.http.task_route import task_router
from service.tasks import landmarks

router = task_router(
    landmarks.TASK, "/landmarks", tags=["landmarks"], operation_id="landmarks",
    summary="Facial landmarks",
    description="Landmarks of each face. ``faces`` are boxes ``[x1, y1, x2, y2]`` (official "
    "rule: centre of the box, crop side ``max(w, h) * box_enlarge``) or ``{\"center\": [x, y], "
    "\"scale\": s}`` (crop side ``s * 200``); ``auto`` (the default when omitted): the faces the "
    "face detector finds, each box by the same rule, answered with its score "
    "(``min_face_score``, ``max_faces``, ``face_model``); ``whole_image``: the whole image is one "
    "face. Coordinates are image pixels with the top-left pixel covering ``[0, 1] x [0, 1]``.",
)
