"""Facial landmarks (``POST /landmarks``): the official HRNet face test path.

resolve (faces, flip, enlargement) -> plan (official crop squares, one batch of crops) -> merge
(flip-averaged heatmaps, official sub-pixel decode) -> respond (points per face, overlay).

Upstream: without face boxes (``faces="auto"``, the default) the face-detection task runs first
on the same image and its faces become the crops (:mod:`service.tasks.common`: ``Upstream``).
"""

from __future__ import annotations

from service.tasks import face_detection
from service.tasks.common import JSON, TaskDef, Upstream
from service.tasks.landmarks import merge, plan, respond
from service.tasks.landmarks.schemas import LandmarkOptions, LandmarksJsonRequest, LandmarksResponse

TASK = TaskDef(
    name="landmarks", options=LandmarkOptions, json_request=LandmarksJsonRequest,
    response=LandmarksResponse, extras=("faces",), media_types=(JSON,),
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
    upstream=Upstream(task=face_detection.TASK, options=plan.face_options,
                      attach=plan.attach_faces, without=plan.without_detector),
)
