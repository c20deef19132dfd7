"""``POST /landmarks``: facial landmarks of the faces of one image.

Three request forms:

* ``multipart/form-data``: a ``file`` part (the image) plus optional form fields ``faces`` (JSON
  list), ``options`` (JSON object) and single options (``model``, ``flip``, ``box_enlarge``,
  ``contrast_stretch``, ``overlay``, ``overlay_format``);
* ``application/json``: :class:`~service.tasks.landmarks.LandmarksJsonRequest` (base64 ``image``);
* a raw image body (``image/*`` or ``application/octet-stream``).

Query parameters (same names, ``faces`` as JSON) are read for every form; body fields win.
The answer is JSON only (406 when ``Accept`` rules JSON out).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.deps import get_registry, get_runner, get_settings, get_timings, set_model_label
from service.errors import ApiError, BadRequest, Unprocessable, UnsupportedMediaType
from service.images import check_body_size, decode_base64, decode_image
from service.metrics import Timings
from service.registry import ModelRegistry
from service.runner import InferenceRunner
from service.schemas import ErrorResponse
from service.settings import Settings
from service.tasks.landmarks import (
    FaceSpec,
    LandmarkOptions,
    LandmarksJsonRequest,
    LandmarksResponse,
    parse_face,
    run_landmarks,
)

router = APIRouter(tags=["landmarks"])

_OPTION_FIELDS = tuple(LandmarkOptions.model_fields)
_ERRORS = {s: {"model": ErrorResponse} for s in (400, 404, 406, 413, 415, 422, 429, 503, 504)}
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The image."},
                        "faces": {"type": "string", "description": "JSON list of boxes or {center, scale}."},
                        "options": {"type": "string", "description": "JSON object of options."},
                        "model": {"type": "string"},
                        "flip": {"type": "boolean"},
                        "box_enlarge": {"type": "number"},
                        "contrast_stretch": {"type": "boolean"},
                        "overlay": {"type": "boolean"},
                        "overlay_format": {"type": "string", "enum": ["jpeg", "png"]},
                    },
                }
            },
            "application/json": {"schema": LandmarksJsonRequest.model_json_schema()},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class NotAcceptable(ApiError):
    status_code = 406
    code = "not_acceptable"


def _check_accept(accept: str | None) -> None:
    """406 unless ``Accept`` allows ``application/json`` (absent = anything)."""
    if not accept:
        return
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 1.0
        if q > 0 and media in ("*/*", "application/*", "application/json"):
            return
    raise NotAcceptable(f"/landmarks answers application/json only; Accept was '{accept}'")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _json_field(value: Any, name: str) -> Any:
    """A form/query field that carries JSON text."""
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"'{name}' is not valid JSON: {exc}", code="invalid_json") from None


def _parse_faces(raw: Any) -> list[FaceSpec] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise Unprocessable("'faces' must be a JSON list of boxes or {center, scale}", code="invalid_face")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(parse_face(item))
        except Unprocessable as exc:
            raise Unprocessable(f"face {i}: {exc.message}", code="invalid_face") from None
        except ValidationError as exc:
            raise Unprocessable(f"face {i}: {_validation_message(exc)}", code="invalid_face") from None
        except (TypeError, ValueError) as exc:
            raise Unprocessable(f"face {i}: {exc}", code="invalid_face") from None
    return out


def _options(fields: dict[str, Any]) -> LandmarkOptions:
    try:
        return LandmarkOptions.model_validate(fields)
    except ValidationError as exc:
        raise Unprocessable(f"invalid options: {_validation_message(exc)}", code="invalid_options") from None


async def _read_request(request: Request, settings: Settings) -> tuple[bytes, Any, dict[str, Any]]:
    """(image bytes, raw faces, option fields) from any of the three request forms."""
    fields: dict[str, Any] = {k: v for k, v in request.query_params.items() if k in _OPTION_FIELDS}
    unknown = [k for k in request.query_params if k not in _OPTION_FIELDS and k != "faces"]
    if unknown:
        raise Unprocessable(f"unknown query parameter(s): {', '.join(sorted(unknown))}", code="invalid_options")
    faces: Any = _json_field(request.query_params.get("faces"), "faces")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()

    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=4, max_fields=32)
        except Exception as exc:  # malformed multipart or over the part limits
            raise BadRequest(f"cannot parse the multipart body: {exc}", code="invalid_multipart") from None
        upload = form.get("file")
        if upload is None:
            raise BadRequest("multipart request needs a 'file' part with the image", code="missing_file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("'file' must be a file part, not a text field", code="missing_file")
        data = await upload.read()
        if "options" in form:
            opts = _json_field(form.get("options"), "options")
            if not isinstance(opts, dict):
                raise Unprocessable("'options' must be a JSON object", code="invalid_options")
            fields.update(opts)
        for key in _OPTION_FIELDS:
            if key in form:
                fields[key] = form.get(key)
        extra = [k for k in form.keys() if k not in _OPTION_FIELDS and k not in ("file", "faces", "options")]
        if extra:
            raise Unprocessable(f"unknown form field(s): {', '.join(sorted(extra))}", code="invalid_options")
        if "faces" in form:
            faces = _json_field(form.get("faces"), "faces")
        return data, faces, fields

    if ctype == "application/json":
        body = await request.body()
        check_body_size(len(body), settings)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise BadRequest("the JSON body must be an object with an 'image' field", code="invalid_json")
        if "image" not in payload:
            raise BadRequest("the JSON body needs an 'image' field (base64)", code="missing_image")
        faces = payload.pop("faces", faces)
        image_text = payload.pop("image")
        fields.update(payload)
        if not isinstance(image_text, str):
            raise BadRequest("'image' must be a base64 string", code="invalid_base64")
        data = await run_in_threadpool(decode_base64, image_text, settings)
        return data, faces, fields

    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), faces, fields

    raise UnsupportedMediaType(
        f"unsupported Content-Type '{ctype or '(none)'}': send multipart/form-data, "
        "application/json, or the image bytes",
        code="unsupported_content_type",
    )


@router.post(
    "/landmarks",
    response_model=LandmarksResponse,
    summary="Facial landmarks",
    responses=_ERRORS,
    openapi_extra=_OPENAPI_BODY,
)
async def landmarks(
    request: Request,
    response: Response,
    settings: Settings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    runner: InferenceRunner = Depends(get_runner),
    timings: Timings = Depends(get_timings),
) -> LandmarksResponse:
    """Landmarks of each given face (none given: the whole image is one face).

    Faces are boxes ``[x1, y1, x2, y2]`` (official rule: centre of the box, crop side
    ``max(w, h) * box_enlarge``) or ``{"center": [x, y], "scale": s}`` (crop side ``s * 200``).
    Coordinates are image pixels with the top-left pixel covering ``[0, 1] x [0, 1]``.
    """
    _check_accept(request.headers.get("accept"))
    data, raw_faces, fields = await _read_request(request, settings)
    options = _options(fields)
    faces = _parse_faces(raw_faces)
    if faces is not None and len(faces) > settings.max_faces:
        raise Unprocessable(
            f"too many faces: {len(faces)} given, at most {settings.max_faces} per request",
            code="too_many_faces",
        )
    meta = registry.resolve(options.model, "landmarks")
    set_model_label(request, meta.name)
    with timings.stage("decode"):
        image = await run_in_threadpool(decode_image, data, settings)
    del data
    response.headers["X-Model"] = meta.name
    response.headers["X-Random-Init"] = "true" if meta.weights.random_init else "false"
    response.headers["X-Image-Size"] = f"{image.shape[1]}x{image.shape[0]}"
    return await run_landmarks(
        image, meta, runner, faces, options, max_faces=settings.max_faces, timings=timings
    )
