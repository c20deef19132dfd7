"""The one request path of every task endpoint, and the route that serves it.

negotiate (``Accept``) -> read the request (images, options, extras) -> pick the model ->
resolve the options against it (and the upstream task's model and options, when the request
needs one: landmarks without face boxes) -> decode the images -> run the task -> headers (model,
random weights, image size, ``Server-Timing``). Each endpoint module (``routers/segment.py`` ...)
only names its task, path and documentation.

A request with several images (file parts, JSON ``images``) goes the same way, image by image up
to the run, which runs them together (:func:`~service.tasks.common.run_batch`); it answers JSON
(:func:`~service.http.schemas.batch_response`): the results in order, an image that fails alone
(unreadable, over its limits) an ``ImageError`` item with its status. Errors of the request as a
whole (options, model, the totals, 429/503/504) answer as for one image.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Union

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from service.contract import ModelMetadata
from service.errors import ServiceError, error_body
from service.http.deps import TaskContext, task_context
from service.http.forms import ImagePart, ParsedRequest, RequestFields, read_request
from service.http.negotiation import negotiate
from service.http.openapi import ERROR_RESPONSES, openapi_body
from service.http.schemas import batch_response
from service.imaging.decode import check_request_pixels
from service.tasks.common import (
    JSON, Binary, Job, Outcome, TaskDef, resolve_upstream, run_batch, run_task,
)
from service.tasks.schemas import TaskResult


def model_headers(meta: ModelMetadata) -> dict[str, str]:
    """``X-Model``, ``X-Model-Precision`` and ``X-Random-Init`` of every task response."""
    return {
        "X-Model": meta.name,
        "X-Model-Precision": meta.precision.precision,
        "X-Random-Init": "true" if meta.weights.random_init else "false",
    }


def result_headers(meta: ModelMetadata, image: np.ndarray) -> dict[str, str]:
    """:func:`model_headers` and ``X-Image-Size`` (``WxH``) of a one-image response (binary
    answers included, which have no JSON head)."""
    return {**model_headers(meta), "X-Image-Size": f"{image.shape[1]}x{image.shape[0]}"}


def json_response(body: BaseModel, headers: Mapping[str, str]) -> Response:
    """``body`` serialised by pydantic (no second validation pass) with ``headers``."""
    return Response(body.model_dump_json(), media_type=JSON, headers=dict(headers))


def _server_timing(ctx: TaskContext) -> str:
    """The stage times as the standard Server-Timing header (the JSON answers repeat them)."""
    return ", ".join(f"{k};dur={v}" for k, v in ctx.timings.as_ms().items())


async def serve_task(request: Request, ctx: TaskContext, task: TaskDef[Any, Any, Any],
                     fields: RequestFields[Any]) -> Response:
    """Answer one request of ``task`` (see the module docstring)."""
    media = negotiate(request, task.media_types)
    parsed = await read_request(request, ctx.settings, fields)
    meta = ctx.model(parsed.options.model, task.name)
    if parsed.batch:
        return await _serve_batch(request, ctx, task, parsed, meta)
    resolved = task.resolve(parsed.options, parsed.extras, meta, ctx.limits)
    resolved, upstream = resolve_upstream(task, resolved, ctx.registry, ctx.limits)
    image = await ctx.decode(parsed.take_image())
    answer = await run_task(task, image, meta, resolved, ctx.runner, ctx.limits,
                            timings=ctx.timings, media=media, upstream=upstream)
    headers = result_headers(meta, image)
    headers["Server-Timing"] = _server_timing(ctx)
    if ctx.image_warning:
        headers["X-Image-Warning"] = ctx.image_warning
    if isinstance(answer, Binary):
        return Response(answer.data, media_type=answer.media_type,
                        headers={**headers, **answer.headers})
    return json_response(answer, headers)


async def _job(ctx: TaskContext, task: TaskDef[Any, Any, Any], parsed: ParsedRequest[Any],
               part: ImagePart, meta: ModelMetadata) -> tuple[Job | ServiceError, str | None]:
    """One image of a batch resolved and decoded (its error, if any, is its own), with the
    lenient decode's warning."""
    if part.error is not None:
        return part.error, None
    data, part.data = part.data, b""  # the upload is not kept once decoded
    try:
        resolved = task.resolve(parsed.options, {**parsed.extras, **part.extras}, meta, ctx.limits)
        resolved, upstream = resolve_upstream(task, resolved, ctx.registry, ctx.limits)
        decoded = await ctx.decode_image(data)
    except ServiceError as exc:
        return exc, None
    return Job(decoded.pixels, resolved, upstream), decoded.warning


def _item_json(i: int, outcome: Outcome) -> str:
    """One result of a batch answer, as JSON text."""
    if isinstance(outcome, ServiceError):
        body = error_body(outcome.code, outcome.client_message)
        return json.dumps({"index": i, "status": outcome.status_code, **body})
    if isinstance(outcome, TaskResult):
        return outcome.model_dump_json()
    raise TypeError(f"a batch item answered {type(outcome).__name__}, not JSON")


async def _serve_batch(request: Request, ctx: TaskContext, task: TaskDef[Any, Any, Any],
                       parsed: ParsedRequest[Any], meta: ModelMetadata) -> Response:
    """Answer a request with several images (see the module docstring)."""
    negotiate(request, (JSON,))  # 406 unless JSON is acceptable: a list has no binary form
    parts = parsed.take_images()
    check_request_pixels([p.data for p in parts if p.error is None], ctx.settings)
    jobs: list[Job | ServiceError] = []
    warnings: list[str] = []
    for i, part in enumerate(parts):
        job, warning = await _job(ctx, task, parsed, part, meta)
        jobs.append(job)
        if warning:
            warnings.append(f"image {i}: {warning}")
    outcomes = await run_batch(task, jobs, meta, ctx.runner, ctx.limits, timings=ctx.timings,
                               media=JSON)
    failed = sum(isinstance(o, ServiceError) for o in outcomes)
    body = (f'{{"images":{len(outcomes)},"failed":{failed},"results":['
            + ",".join(_item_json(i, o) for i, o in enumerate(outcomes))
            + f'],"timings_ms":{json.dumps(ctx.timings.as_ms())}}}')
    sizes = ",".join(f"{j.image.shape[1]}x{j.image.shape[0]}" if isinstance(j, Job) else "-"
                     for j in jobs)
    headers = {**model_headers(meta), "X-Image-Count": str(len(outcomes)),
               "X-Image-Size": sizes, "Server-Timing": _server_timing(ctx)}
    if warnings:
        headers["X-Image-Warning"] = "; ".join(warnings)
    return Response(body, media_type=JSON, headers=headers)


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
    # One image answers task.response; several, its batch form (documented as either).
    answer = Union[task.response, batch_response(task.response)]  # type: ignore[valid-type]
    router.add_api_route(path, endpoint, methods=["POST"], response_model=answer,
                         summary=summary, description=description, operation_id=operation_id,
                         responses=responses, openapi_extra=openapi_body(fields))
    return router
