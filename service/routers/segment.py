"""``POST /segment``: multipart upload, JSON with base64, or a raw image body."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.deps import get_registry, get_runner, get_settings, get_timings, set_model_label
from service.errors import BadRequest, Unprocessable, UnsupportedMediaType
from service.images import decode_base64, decode_image
from service.metrics import Timings
from service.registry import ModelRegistry
from service.runner import InferenceRunner
from service.schemas import ErrorResponse
from service.settings import Settings
from service.tasks.segment import (
    SegmentOptions, SegmentRequest, SegmentResponse, build_response, segment,
)
from service import encode

router = APIRouter(tags=["segmentation"])

_OPTION_FIELDS = tuple(SegmentOptions.model_fields)

_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "options": {"type": "string", "description": "JSON object of SegmentOptions."},
                        **{k: {"type": "string"} for k in _OPTION_FIELDS},
                    },
                }
            },
            "application/json": {"schema": SegmentRequest.model_json_schema()},
            "image/*": {"schema": {"type": "string", "format": "binary"},
                        "description": "Raw image; options as query parameters."},
        },
    }
}


def _form_value(name: str, value: str) -> Any:
    """Form/query strings -> option values (scales: '0.5,1' or JSON list or 'multi')."""
    if name == "scales":
        v = value.strip()
        if v == "multi":
            return v
        if v.startswith("["):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise Unprocessable(f"scales: not a JSON list: {v!r}", code="invalid_options") from None
        return [p for p in (x.strip() for x in v.split(",")) if p]
    if value == "" and name in ("model", "window", "overlay"):
        return None
    return value


def _options(raw: dict[str, Any]) -> SegmentOptions:
    try:
        return SegmentOptions.model_validate(raw)
    except ValidationError as exc:
        raise Unprocessable(_readable(exc), code="invalid_options") from None


def _readable(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()
    )


async def _parse(request: Request, settings: Settings) -> tuple[bytes, SegmentOptions]:
    """The image bytes and the options, whatever the content type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=64)
        upload = form.get("file") or form.get("image")
        if upload is None or isinstance(upload, str):
            raise BadRequest("multipart body needs a 'file' part with the image", code="missing_file")
        data = await upload.read()
        raw: dict[str, Any] = {}
        if isinstance(form.get("options"), str) and form["options"].strip():
            try:
                raw = json.loads(form["options"])
            except json.JSONDecodeError as exc:
                raise Unprocessable(f"options: not valid JSON ({exc})", code="invalid_options") from None
            if not isinstance(raw, dict):
                raise Unprocessable("options: must be a JSON object", code="invalid_options")
        for key, value in form.multi_items():
            if key in ("file", "image", "options"):
                continue
            if not isinstance(value, str):
                raise BadRequest(f"unexpected file part '{key}'", code="invalid_options")
            raw[key] = _form_value(key, value)
        return data, _options(raw)
    if ctype in ("application/json", ""):
        body = await request.body()
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
        try:
            req = SegmentRequest.model_validate(payload)
        except ValidationError as exc:
            raise Unprocessable(_readable(exc), code="invalid_options") from None
        data = decode_base64(req.image, settings)
        return data, SegmentOptions.model_validate(req.model_dump(exclude={"image"}))
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        raw = {k: _form_value(k, v) for k, v in request.query_params.items()}
        return await request.body(), _options(raw)
    raise UnsupportedMediaType(
        f"content type '{ctype}' not supported: send multipart/form-data (file), application/json "
        "(base64 'image') or a raw image/* body", code="unsupported_content_type",
    )


def _wants_png(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept


@router.post(
    "/segment",
    response_model=SegmentResponse,
    summary="Semantic segmentation (official multi-scale + flip procedure)",
    openapi_extra=_OPENAPI,
    responses={
        200: {"content": {"image/png": {}},
              "description": "JSON, or the label map PNG with 'Accept: image/png'."},
        **{c: {"model": ErrorResponse} for c in (400, 404, 413, 415, 422, 429, 503, 504)},
    },
)
async def segment_endpoint(
    request: Request,
    settings: Settings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    runner: InferenceRunner = Depends(get_runner),
    timings: Timings = Depends(get_timings),
) -> Any:
    """Segment one image. Options: model, scales (list or 'multi'), flip, window; outputs: label_map,
    rle, confidence, overlay, label_ids. ``Accept: image/png`` answers the label map PNG itself."""
    t0 = time.perf_counter()
    data, opts = await _parse(request, settings)
    meta = registry.resolve(opts.model, "segmentation")
    set_model_label(request, meta.name)
    if opts.label_ids and not meta.label_ids:
        raise BadRequest(f"model '{meta.name}' ({meta.dataset}) has no label id mapping",
                         code="invalid_options")
    rgb = await run_in_threadpool(decode_image, data, settings)
    del data
    timings.add("decode", time.perf_counter() - t0)
    outcome = await segment(rgb, meta, opts, runner, settings, timings)
    headers = {
        "X-Model": meta.name,
        "X-Random-Init": "true" if meta.weights.random_init else "false",
        "X-Image-Size": f"{rgb.shape[1]}x{rgb.shape[0]}",
    }
    if _wants_png(request):
        t1 = time.perf_counter()
        png = await run_in_threadpool(encode.label_png, outcome.labels, meta.palette)
        timings.add("encode", time.perf_counter() - t1)
        return Response(png, media_type="image/png", headers=headers)
    resp = await run_in_threadpool(build_response, rgb, meta, opts, outcome, timings)
    return Response(resp.model_dump_json(), media_type="application/json", headers=headers)
