"""``POST /segment``: the request forms of :mod:`service.routers._common`; ``scales`` is a list
or ``multi``; ``Accept: image/png`` answers the label map PNG itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service import encode
from service.deps import TaskContext, task_context
from service.errors import Unprocessable
from service.routers._common import (
    ERROR_RESPONSES, JSON, PNG, RequestFields, json_response, list_text, negotiate, openapi_body,
    read_request, result_headers,
)
from service.tasks.segment import (
    SegmentOptions, SegmentRequest, SegmentResponse, build_response, segment,
)

router = APIRouter(tags=["segmentation"])


def _scales_text(name: str, text: str) -> Any:
    """``multi`` (the model's official set), a JSON list or comma-separated scales."""
    return "multi" if text.strip() == "multi" else list_text(name, text)


FIELDS = RequestFields(SegmentOptions, SegmentRequest, text={"scales": _scales_text})


@router.post(
    "/segment",
    response_model=SegmentResponse,
    summary="Semantic segmentation (official multi-scale + flip procedure)",
    openapi_extra=openapi_body(FIELDS),
    responses={
        200: {"content": {PNG: {}},
              "description": "JSON, or the label map PNG with 'Accept: image/png'."},
        **ERROR_RESPONSES,
    },
)
async def segment_endpoint(request: Request, ctx: TaskContext = Depends(task_context)) -> Response:
    """Segment one image. Options: model, scales (list or 'multi'), flip, window; outputs: label_map,
    rle, confidence, overlay, label_ids. ``Accept: image/png`` answers the label map PNG itself."""
    media = negotiate(request, (JSON, PNG))
    parsed = await read_request(request, ctx.settings, FIELDS)
    opts = parsed.options
    meta = ctx.model(opts.model, "segmentation")
    if opts.label_ids and not meta.label_ids:
        raise Unprocessable(f"invalid options: label_ids: model '{meta.name}' ({meta.dataset}) has "
                            "no label id mapping", code="invalid_options")
    rgb = await ctx.decode(parsed.take_image())
    outcome = await segment(rgb, meta, opts, ctx.runner, ctx.settings, ctx.timings)
    headers = result_headers(meta, rgb)
    if media == PNG:
        with ctx.timings.stage("encode"):
            png = await run_in_threadpool(encode.label_png, outcome.labels, meta.palette)
        return Response(png, media_type=PNG, headers=headers)
    resp = await run_in_threadpool(build_response, rgb, meta, opts, outcome, ctx.timings)
    return json_response(resp, headers)
