"""Facial landmarks (``POST /landmarks``): the official HRNet face test path.

resolve (faces, flip, enlargement) -> plan (official crop squares, one batch of crops) -> merge
(flip-averaged heatmaps, official sub-pixel decode) -> respond (points per face, overlay).
"""

from __future__ import annotations

from service.tasks.common import JSON, TaskDef
from service.tasks.landmarks import merge, plan, respond
from service.tasks.landmarks.schemas import LandmarkOptions, LandmarksJsonRequest, LandmarksResponse

TASK = TaskDef(
    name="landmarks", options=LandmarkOptions, json_request=LandmarksJsonRequest,
    response=LandmarksResponse, extras=("faces",), media_types=(JSON,),
    resolve=plan.resolve, plan=plan.plan, merge=merge.merge, respond=respond.respond,
)
