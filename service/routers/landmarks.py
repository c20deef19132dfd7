"""``POST /landmarks``: facial landmarks of the faces of one image.

The request forms of :mod:`service.routers._common`, plus a ``faces`` field (a JSON list of boxes
or ``{center, scale}``; JSON text in forms and query strings). The answer is JSON only (406 when
``Accept`` rules JSON out).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.deps import TaskContext, task_context
from service.errors import BadRequest
from service.routers._common import (
    ERROR_RESPONSES, RequestFields, json_response, negotiate, openapi_body, read_request,
    result_headers,
)
from service.tasks.landmarks import (
    LandmarkOptions, LandmarksJsonRequest, LandmarksResponse, check_face_count, parse_faces,
    run_landmarks,
)

router = APIRouter(tags=["landmarks"])


def _faces_text(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"'{name}' is not valid JSON: {exc}", code="invalid_json") from None


FIELDS = RequestFields(LandmarkOptions, LandmarksJsonRequest, extras={"faces": _faces_text})


@router.post(
    "/landmarks",
    response_model=LandmarksResponse,
    summary="Facial landmarks",
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(FIELDS),
)
async def landmarks(request: Request, ctx: TaskContext = Depends(task_context)) -> Response:
    """Landmarks of each given face (none given: the whole image is one face).

    Faces are boxes ``[x1, y1, x2, y2]`` (official rule: centre of the box, crop side
    ``max(w, h) * box_enlarge``) or ``{"center": [x, y], "scale": s}`` (crop side ``s * 200``).
    Coordinates are image pixels with the top-left pixel covering ``[0, 1] x [0, 1]``.
    """
    negotiate(request)
    parsed = await read_request(request, ctx.settings, FIELDS)
    faces = parse_faces(parsed.extras.get("faces"))
    if faces is not None:
        check_face_count(len(faces), ctx.settings.max_faces)  # before decoding the image
    meta = ctx.model(parsed.options.model, "landmarks")
    image = await ctx.decode(parsed.take_image())
    resp = await run_landmarks(image, meta, ctx.runner, faces, parsed.options,
                               max_faces=ctx.settings.max_faces, timings=ctx.timings)
    return json_response(resp, result_headers(meta, image))
