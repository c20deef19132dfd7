"""What the task endpoints (``/segment``, ``/landmarks``, ``/detect``) share: reading the image and
the options from any request form, content negotiation, response headers, the OpenAPI body.

Request forms, the same for every endpoint:

* ``multipart/form-data``: a ``file`` part (``image`` also accepted) with the image, plus an
  ``options`` field (JSON object) and/or one field per option;
* ``application/json``: an object with the base64 ``image`` and the options as fields;
* a raw ``image/*`` (or ``application/octet-stream``) body.

Query parameters are read for every form (the same names, ``options`` included). Precedence:
query < ``options`` object < individual fields (for JSON bodies: query < body). An empty form or
query value counts as omitted. Text values go through the endpoint's parsers (lists as JSON or
comma-separated); everything is then validated by the endpoint's options model, so unknown and
invalid options answer 422 ``invalid_options`` with the field path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar

import numpy as np
from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from service.errors import (
    ApiError, BadRequest, NotAcceptable, Unprocessable, UnsupportedMediaType, describe_validation,
)
from service.images import check_body_size, decode_base64
from service.contract import ModelMetadata
from service.schemas import ErrorResponse
from service.settings import Settings

JSON = "application/json"
PNG = "image/png"

O = TypeVar("O", bound=BaseModel)
TextParser = Callable[[str, str], Any]
"""``parser(name, text) -> value`` for a field that arrives as form or query text."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 404, 406, 413, 415, 422, 429, 503, 504)
}
"""The error statuses every task endpoint may answer (for ``responses=``)."""

_IMAGE_PARTS = ("file", "image")


def list_text(name: str, text: str) -> Any:
    """A list option given as text: a JSON list (``[0.5, 1]``) or comma-separated (``0.5,1``)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise Unprocessable(f"invalid options: {name}: not a JSON list ({exc})",
                                code="invalid_options") from None
    return [p.strip() for p in text.split(",") if p.strip()]


@dataclass(frozen=True)
class RequestFields(Generic[O]):
    """The fields one endpoint reads besides the image."""

    options: type[O]
    """Validates the options (``extra="forbid"``: unknown names are errors)."""
    json_model: type[BaseModel]
    """The JSON body as documented in OpenAPI (base64 ``image`` + options + extras)."""
    text: Mapping[str, TextParser] = field(default_factory=dict)
    """Option fields whose form/query text needs parsing (lists); others go to pydantic as is."""
    extras: Mapping[str, TextParser] = field(default_factory=dict)
    """Task fields that are not options (landmarks' ``faces``), with their text parser."""


@dataclass
class ParsedRequest(Generic[O]):
    """The image bytes, validated options and raw extra fields of one request."""

    data: bytes
    options: O
    extras: dict[str, Any]

    def take_image(self) -> bytes:
        """The image bytes, forgotten here (a large upload is not kept during inference)."""
        data, self.data = self.data, b""
        return data


class _Collector:
    """Gathers option and extra fields from the request's sources, later sources winning."""

    def __init__(self, fields: RequestFields[Any]) -> None:
        self.fields = fields
        self.options: dict[str, Any] = {}
        self.extras: dict[str, Any] = {}

    def add_value(self, name: str, value: Any) -> None:
        """A typed value (from a JSON object)."""
        (self.extras if name in self.fields.extras else self.options)[name] = value

    def add_text(self, items: Iterable[tuple[str, str]]) -> None:
        """Text fields of one source (query string or form): the ``options`` object first, then
        the individual fields, so these win over it."""
        items = [(k, v) for k, v in items if v != ""]
        for name, text in items:
            if name == "options":
                for k, v in _json_object(text).items():
                    self.add_value(k, v)
        for name, text in items:
            if name == "options":
                continue
            if name in self.fields.extras:
                self.extras[name] = self.fields.extras[name](name, text)
            else:
                parse = self.fields.text.get(name)
                self.options[name] = parse(name, text) if parse else text

    def validated(self) -> Any:
        """The options model (422 ``invalid_options`` naming each bad field)."""
        try:
            return self.fields.options.model_validate(self.options)
        except ValidationError as exc:
            raise Unprocessable(f"invalid options: {describe_validation(exc.errors())}",
                                code="invalid_options") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Unprocessable(f"invalid options: options: not valid JSON ({exc})",
                            code="invalid_options") from None
    if not isinstance(value, dict):
        raise Unprocessable("invalid options: options: must be a JSON object", code="invalid_options")
    return value


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _multipart(request: Request, fields: _Collector) -> bytes:
    """The uploaded image part's bytes; the text fields go to ``fields``."""
    try:
        form = await request.form(max_files=4, max_fields=64)
    except ApiError:  # e.g. 413 from the body limit while the parts stream in
        raise
    except Exception as exc:  # malformed multipart or over the part limits
        raise BadRequest(f"cannot parse the multipart body: {exc}", code="invalid_multipart") from None
    try:
        return await _multipart_parts(form, fields)
    finally:
        # Starlette spools uploads over 1 MB to temporary files; nothing else closes them
        # when an endpoint reads the form itself.
        await form.close()


async def _multipart_parts(form: FormData, fields: _Collector) -> bytes:
    """The image part's bytes of a parsed ``form``; its text fields go to ``fields``."""
    name = next((n for n in _IMAGE_PARTS if n in form), None)
    if name is None:
        raise BadRequest("multipart request needs a 'file' part with the image", code="missing_file")
    upload = form[name]
    if not isinstance(upload, UploadFile):
        raise BadRequest(f"'{name}' must be a file part, not a text field", code="missing_file")
    texts = []
    for key, value in form.multi_items():
        if value is upload:
            continue
        if not isinstance(value, str):
            raise BadRequest(f"unexpected file part '{key}'", code="invalid_multipart")
        texts.append((key, value))
    fields.add_text(texts)
    return await upload.read()


async def _json_body(request: Request, settings: Settings, fields: _Collector) -> Any:
    """The JSON body's ``image`` value; its other fields go to ``fields``."""
    body = await request.body()
    check_body_size(len(body), settings)
    try:
        payload = await run_in_threadpool(json.loads, body)  # ~1 ms per MB: off the event loop
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("the JSON body must be an object with an 'image' field", code="invalid_json")
    if "image" not in payload:
        raise BadRequest("the JSON body needs an 'image' field (base64)", code="missing_image")
    image = payload.pop("image")
    for key, value in payload.items():
        fields.add_value(key, value)
    return image


async def read_request(request: Request, settings: Settings, spec: RequestFields[O]) -> ParsedRequest[O]:
    """Image bytes, options and extras of any request form (see the module docstring).

    400 for unreadable bodies, 413 over the size limit, 415 for other content types, 422 for
    invalid options. Base64 is decoded after the options are validated.
    """
    fields = _Collector(spec)
    fields.add_text(request.query_params.multi_items())
    ctype = content_type(request)
    if ctype == JSON:
        image = await _json_body(request, settings, fields)
        options = fields.validated()
        data = await run_in_threadpool(decode_base64, image, settings)
    elif ctype == "multipart/form-data":
        data = await _multipart(request, fields)
        options = fields.validated()
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await request.body()
        options = fields.validated()
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type '{ctype or '(none)'}': send multipart/form-data (a 'file' "
            "part), application/json (base64 'image'), or the image bytes (image/*)",
            code="unsupported_content_type",
        )
    return ParsedRequest(data, options, fields.extras)


def _accept_ranges(accept: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` of each media range of an ``Accept`` header."""
    ranges = []
    for part in accept.split(","):
        media, *params = part.strip().split(";")
        kind, _, sub = media.strip().lower().partition("/")
        if not kind:
            continue
        q = 1.0
        for p in params:
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 1.0
        ranges.append((kind, sub or "*", q))
    return ranges


def negotiate(request: Request, offered: Sequence[str] = (JSON,)) -> str:
    """The media type of ``offered`` the client's ``Accept`` prefers (the most specific matching
    range gives each its q; ties go to the order of ``offered``); 406 when none is acceptable.
    No ``Accept`` header accepts anything."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return offered[0]
    ranges = _accept_ranges(accept)
    best, best_q = None, 0.0
    for media in offered:
        kind, _, sub = media.partition("/")
        matches = [(int(k != "*") + int(s != "*"), q) for k, s, q in ranges
                   if k in ("*", kind) and s in ("*", sub)]
        q = max(matches)[1] if matches else 0.0
        if q > best_q:
            best, best_q = media, q
    if best is None:
        raise NotAcceptable(
            f"{request.url.path} answers {' or '.join(offered)}; Accept was '{accept}'"
        )
    return best


def result_headers(meta: ModelMetadata, image: np.ndarray) -> dict[str, str]:
    """``X-Model``, ``X-Random-Init`` and ``X-Image-Size`` (``WxH``) of every task response."""
    return {
        "X-Model": meta.name,
        "X-Random-Init": "true" if meta.weights.random_init else "false",
        "X-Image-Size": f"{image.shape[1]}x{image.shape[0]}",
    }


def json_response(body: BaseModel, headers: Mapping[str, str]) -> Response:
    """``body`` serialised by pydantic (no second validation pass) with ``headers``."""
    return Response(body.model_dump_json(), media_type=JSON, headers=dict(headers))


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (OpenAPI request bodies cannot point at
    a model's own ``$defs``). Request models are not recursive."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _form_property(prop: dict[str, Any]) -> dict[str, Any]:
    """A form field's schema: the option's scalar type, or text (lists: JSON or comma-separated)."""
    kinds = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    scalar = len(kinds) == 1 and kinds[0].get("type") in ("boolean", "integer", "number", "string")
    out = {k: kinds[0][k] for k in ("type", "enum") if k in kinds[0]} if scalar else {"type": "string"}
    desc = prop.get("description", "") if scalar else \
        f"{prop.get('description', '')} (JSON list or comma-separated.)".strip()
    return {**out, "description": desc} if desc else out


def openapi_body(spec: RequestFields[Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting the three request forms of an endpoint."""
    json_schema = _inline_refs(spec.json_model.model_json_schema())
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The image."},
        "options": {"type": "string", "description": "JSON object of options; fields win over it."},
    }
    for name in spec.extras:
        desc = json_schema["properties"].get(name, {}).get("description", "")
        props[name] = {"type": "string", "description": f"{desc} (JSON text.)".strip()}
    for name, prop in _inline_refs(spec.options.model_json_schema())["properties"].items():
        props[name] = _form_property(prop)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": props}
                },
                JSON: {"schema": json_schema},
                "image/*": {"schema": {"type": "string", "format": "binary"},
                            "description": "Raw image; options as query parameters."},
            },
        }
    }
