"""The one request path of every task endpoint, and the route that serves it.

negotiate (``Accept``) -> read the request (image bytes, options, extras) -> pick the model ->
resolve the options against it (and the upstream task's model and options, when the request
needs one: landmarks without face boxes) -> decode the image -> run the task -> headers (model,
random weights, image size, ``Server-Timing``). Each endpoint
module (``routers/segment.py`` ...) only names its task, path and documentation.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from service.contract import ModelMetadata
from service.http.deps import TaskContext, task_context
from service.http.forms import RequestFields, read_request
from service.http.negotiation import negotiate
from service.http.openapi import ERROR_RESPONSES, openapi_body
from service.tasks.common import JSON, Binary, TaskDef, resolve_upstream, run_task


def result_headers(meta: ModelMetadata, image: np.ndarray) -> dict[str, str]:
    """``X-Model``, ``X-Model-Precision``, ``X-Random-Init`` and ``X-Image-Size`` (``WxH``) of
    every task response (binary answers included, which have no JSON head)."""
    return {
        "X-Model": meta.name,
        "X-Model-Precision": meta.precision.precision,
        "X-Random-Init": "true" if meta.weights.random_init else "false",
        "X-Image-Size": f"{image.shape[1]}x{image.shape[0]}",
    }


def json_response(body: BaseModel, headers: Mapping[str, str]) -> Response:
    """``body`` serialised by pydantic (no second validation pass) with ``headers``."""
    return Response(body.model_dump_json(), media_type=JSON, headers=dict(headers))


async def serve_task(request: Request, ctx: TaskContext, task: TaskDef[Any, Any, Any],
                     fields: RequestFields[Any]) -> Response:
    """Answer one request of ``task`` (see the module docstring)."""
    media = negotiate(request, task.media_types)
    parsed = await read_request(request, ctx.settings, fields)
    meta = ctx.model(parsed.options.model, task.name)
    resolved = task.resolve(parsed.options, parsed.extras, meta, ctx.limits)
    resolved, upstream = resolve_upstream(task, resolved, ctx.registry, ctx.limits)
    image = await ctx.decode(parsed.take_image())
    answer = await run_task(task, image, meta, resolved, ctx.runner, ctx.limits,
                            timings=ctx.timings, media=media, upstream=upstream)
    headers = result_headers(meta, image)
    # The stage times as the standard Server-Timing header (the JSON answers repeat them).
    headers["Server-Timing"] = ", ".join(f"{k};dur={v}" for k, v in ctx.timings.as_ms().items())
    if ctx.image_warning:
        headers["X-Image-Warning"] = ctx.image_warning
    if isinstance(answer, Binary):
        return Response(answer.data, media_type=answer.media_type,
                        headers={**headers, **answer.headers})
    return json_response(answer, headers)


def task_router(task: TaskDef[Any, Any, Any], path: str, *, tags: list[str], summary: str,
                description: str, operation_id: str) -> APIRouter:
    """An ``APIRouter`` with ``POST path`` serving ``task`` (documented in all request forms)."""
    fields = RequestFields.of(task)
    router = APIRouter(tags=tags)
    responses: dict[int | str, dict[str, Any]] = dict(ERROR_RESPONSES)
    others = [m for m in task.media_types if m != JSON]
    if others:
        responses[200] = {"content": {m: {} for m in others},
                          "description": f"JSON, or {' / '.join(others)} as negotiated by Accept."}

    async def endpoint(request: Request, ctx: TaskContext = Depends(task_context)) -> Response:
        return await serve_task(request, ctx, task, fields)

    endpoint.__doc__ = description
    router.add_api_route(path, endpoint, methods=["POST"], response_model=task.response,
                         summary=summary, description=description, operation_id=operation_id,
                         responses=responses, openapi_extra=openapi_body(fields))
    return router
