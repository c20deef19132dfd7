"""``POST /detect``: objects in one image (HRNetV2p Faster R-CNN).

The request forms of :mod:`service.routers._common`; ``classes``, ``scales`` and ``max_size``
accept JSON lists or comma-separated text in forms and query strings.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.deps import TaskContext, task_context
from service.routers._common import (
    ERROR_RESPONSES, RequestFields, json_response, list_text, negotiate, openapi_body,
    read_request, result_headers,
)
from service.tasks.detect import DetectOptions, DetectRequest, DetectResponse, run_detect

router = APIRouter(tags=["detection"])

FIELDS = RequestFields(DetectOptions, DetectRequest,
                       text=dict.fromkeys(("scales", "max_size", "classes"), list_text))


@router.post("/detect", response_model=DetectResponse, summary="Object detection",
             responses=ERROR_RESPONSES, openapi_extra=openapi_body(FIELDS))
async def detect(request: Request, ctx: TaskContext = Depends(task_context)) -> Response:
    """Boxes, classes and scores of the objects in the image, in original-image pixels.

    Official test procedure: resize to fit 1333x800 (``max_size``), pad to a multiple of 32,
    score > 0.05, per-class NMS 0.5, at most 100 boxes. Options narrow the output (``classes``,
    ``score_threshold``, ``max_detections``) or add test-time augmentation (``scales``, ``flip``,
    merged by ``merge`` = ``nms`` or ``wbf``).
    """
    negotiate(request)
    parsed = await read_request(request, ctx.settings, FIELDS)
    meta = ctx.model(parsed.options.model, "detection")
    image = await ctx.decode(parsed.take_image())
    resp = await run_detect(image, meta, ctx.runner, parsed.options, timings=ctx.timings,
                            max_network_pixels=ctx.settings.max_network_pixels)
    return json_response(resp, result_headers(meta, image))
