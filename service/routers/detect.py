"""``POST /detect``: objects in one image (HRNetV2p Faster R-CNN).

Request forms: ``multipart/form-data`` with a ``file`` part plus option fields (or an ``options``
JSON object); ``application/json`` with a base64 ``image`` and options; or the raw image bytes
(``image/*``, ``application/octet-stream``) with options as query parameters. Query parameters are
read for every form; body fields win. ``classes`` and ``scales`` accept JSON lists or
comma-separated text.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.deps import get_registry, get_runner, get_settings, get_timings, set_model_label
from service.errors import BadRequest, Unprocessable, UnsupportedMediaType
from service.images import check_body_size, decode_base64, decode_image
from service.metrics import Timings
from service.registry import ModelRegistry
from service.runner import InferenceRunner
from service.schemas import ErrorResponse
from service.settings import Settings
from service.tasks.detect import DetectOptions, DetectResponse, run_detect

router = APIRouter(tags=["detection"])

_FIELDS = tuple(DetectOptions.model_fields)
_ERRORS = {s: {"model": ErrorResponse} for s in (400, 404, 413, 415, 422, 429, 503, 504)}


def _coerce(key: str, value: Any) -> Any:
    """Text fields holding JSON lists/tuples (``scales``, ``classes``, ``max_size``)."""
    if isinstance(value, str) and key in ("scales", "max_size", "classes"):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"'{key}' is not valid JSON: {exc}", code="invalid_json") from None
        if key != "classes":
            return [p for p in text.split(",") if p.strip()]
    return value


async def _read(request: Request, settings: Settings) -> tuple[bytes, dict[str, Any]]:
    fields: dict[str, Any] = {}
    for k, v in request.query_params.items():
        if k not in _FIELDS:
            raise Unprocessable(f"unknown query parameter '{k}'", code="invalid_options")
        fields[k] = v
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=2, max_fields=32)
        except Exception as exc:  # malformed multipart or over the part limits
            raise BadRequest(f"cannot parse the multipart body: {exc}", code="invalid_multipart") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("multipart request needs a 'file' part with the image", code="missing_file")
        data = await upload.read()
        for k in form.keys():
            if k == "file":
                continue
            if k == "options":
                try:
                    opts = json.loads(str(form.get("options")))
                except json.JSONDecodeError as exc:
                    raise BadRequest(f"'options' is not valid JSON: {exc}", code="invalid_json") from None
                if not isinstance(opts, dict):
                    raise Unprocessable("'options' must be a JSON object", code="invalid_options")
                fields.update(opts)
            elif k in _FIELDS:
                fields[k] = form.get(k)
            else:
                raise Unprocessable(f"unknown form field '{k}'", code="invalid_options")
        return data, fields
    if ctype == "application/json":
        body = await request.body()
        check_body_size(len(body), settings)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise BadRequest("the JSON body needs an 'image' field (base64)", code="missing_image")
        data = await run_in_threadpool(decode_base64, payload.pop("image"), settings)
        fields.update(payload)
        return data, fields
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), fields
    raise UnsupportedMediaType(
        f"unsupported Content-Type '{ctype or '(none)'}': send multipart/form-data, "
        "application/json, or the image bytes", code="unsupported_content_type")


def _options(fields: dict[str, Any]) -> DetectOptions:
    try:
        return DetectOptions.model_validate({k: _coerce(k, v) for k, v in fields.items()})
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                        for e in exc.errors())
        raise Unprocessable(f"invalid options: {msg}", code="invalid_options") from None


@router.post("/detect", response_model=DetectResponse, summary="Object detection",
             responses=_ERRORS)
async def detect(
    request: Request,
    settings: Settings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    runner: InferenceRunner = Depends(get_runner),
    timings: Timings = Depends(get_timings),
) -> DetectResponse:
    """Boxes, classes and scores of the objects in the image, in original-image pixels.

    Official test procedure: resize to fit 1333x800 (``max_size``), pad to a multiple of 32,
    score > 0.05, per-class NMS 0.5, at most 100 boxes. Options narrow the output (``classes``,
    ``score_threshold``, ``max_detections``) or add test-time augmentation (``scales``, ``flip``,
    merged by ``merge`` = ``nms`` or ``wbf``).
    """
    data, fields = await _read(request, settings)
    options = _options(fields)
    meta = registry.resolve(options.model, "detection")
    set_model_label(request, meta.name)
    with timings.stage("decode"):
        image = await run_in_threadpool(decode_image, data, settings)
    return await run_detect(image, meta, runner, options, timings=timings)
