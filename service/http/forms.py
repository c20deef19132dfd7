"""Reading a task request: the image and the options from any request form.

Request forms, the same for every endpoint:

* ``multipart/form-data``: a ``file`` part (``image`` also accepted) with the image, plus an
  ``options`` field (JSON object) and/or one field per option;
* ``application/json``: an object with the base64 ``image`` and the options as fields;
* a raw ``image/*`` (or ``application/octet-stream``) body.

Several images (at most ``max_images``): several ``file`` parts, or a JSON ``images`` list
instead of ``image`` (each item a base64 string, or an object with its ``image`` and the task's
extra fields for that image, e.g. landmarks' ``faces``; the request's own extras apply to items
without theirs). The options are the request's, the same for every image. A batch answers a list
(see ``task_route``); an item whose base64 is invalid fails alone.

Query parameters are read for every form (the same names, ``options`` included). Precedence:
query < ``options`` object < individual fields (for JSON bodies: query < body). An empty form or
query value counts as omitted. Text values go through the endpoint's parsers (lists as JSON or
comma-separated, for every option whose type is a list), and a task's extra fields (landmarks'
``faces``) are JSON text; everything is then validated by the task's options model, so unknown
and invalid options answer 422 ``invalid_options`` with the field path.
"""

from __future__ import annotations

import json
import types
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Generic, Iterable, Literal, Mapping, TypeVar, Union, get_args
from typing import get_origin

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser

from service.errors import (
    BadRequest, ServiceError, Unprocessable, UnsupportedMediaType, describe_validation, shown,
)
from service.imaging.decode import check_body_size, decode_base64
from service.settings import Settings
from service.tasks.common import JSON, TaskDef

O = TypeVar("O", bound=BaseModel)
TextParser = Callable[[str, str], Any]
"""``parser(name, text) -> value`` for a field that arrives as form or query text."""

_IMAGE_PARTS = ("file", "image")

# What json.loads raises besides JSONDecodeError: RecursionError past ~1000 levels of nesting,
# ValueError for an integer of more than 4300 digits (Python's int-conversion limit).
_JSON_ERRORS = (ValueError, RecursionError)


def _json_problem(exc: BaseException) -> str:
    """Why json.loads refused a text, in words (no traceback, no echo of the input)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8 text"
    if "digits" in str(exc):
        return "an integer has too many digits"
    return "not valid JSON"


def _loads(text: str | bytes) -> Any:
    """``json.loads`` (raises only ``_JSON_ERRORS``)."""
    return json.loads(text)


def list_text(name: str, text: str) -> Any:
    """A list option given as text: a JSON list (``[0.5, 1]``) or comma-separated (``0.5,1``)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return _loads(text)
        except _JSON_ERRORS as exc:
            raise Unprocessable(f"invalid options: {name}: not a JSON list ({_json_problem(exc)})",
                                code="invalid_options") from None
    return [p.strip() for p in text.split(",") if p.strip()]


def json_text(name: str, text: str) -> Any:
    """A JSON value given as text (a task's extra field, e.g. ``faces``); 400 ``invalid_json``.
    A bare word (``faces=auto``) is that string, as if it were quoted."""
    word = text.strip()
    if word.isidentifier() and word not in ("true", "false", "null"):
        return word
    try:
        return _loads(text)
    except _JSON_ERRORS as exc:
        raise BadRequest(f"'{name}' is not valid JSON: {_json_problem(exc)}", code="invalid_json") from None


def _union_args(annotation: Any) -> tuple[Any, ...]:
    """The members of a (possibly ``Annotated``) union type, each without its ``Annotated``."""
    if get_origin(annotation) is Annotated:
        return _union_args(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(m for a in get_args(annotation) for m in _union_args(a))
    return (annotation,)


def text_parser(annotation: Any) -> TextParser | None:
    """The parser of an option's text form: lists (and tuples) take JSON or comma-separated text;
    a word the type also allows (segmentation's ``scales=multi``) passes as is. None: the text
    goes to pydantic unchanged (numbers, booleans, words)."""
    args = _union_args(annotation)
    if not any(a in (list, tuple) or get_origin(a) in (list, tuple) for a in args):
        return None
    words = {v for a in args if get_origin(a) is Literal for v in get_args(a) if isinstance(v, str)}

    def parse(name: str, text: str) -> Any:
        return text.strip() if text.strip() in words else list_text(name, text)

    return parse


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

    @classmethod
    def of(cls, task: TaskDef[Any, Any, Any]) -> "RequestFields[Any]":
        """The fields of ``task``'s requests (parsers derived from its options' types)."""
        text = {name: parser for name, f in task.options.model_fields.items()
                if (parser := text_parser(f.annotation)) is not None}
        return cls(task.options, task.json_request, text, dict.fromkeys(task.extras, json_text))


@dataclass
class ImagePart:
    """One image of a request: its bytes and the extra fields given for it alone, or the error
    that makes it unreadable (that image fails alone)."""

    data: bytes
    extras: dict[str, Any] = field(default_factory=dict)
    error: ServiceError | None = None


@dataclass
class ParsedRequest(Generic[O]):
    """The images, validated options and raw extra fields of one request."""

    images: list[ImagePart]
    options: O
    extras: dict[str, Any]
    batch: bool = False
    """Several images were sent (file parts, or a JSON ``images`` list): the answer is a list."""

    def take_images(self) -> list[ImagePart]:
        """The images, forgotten here (large uploads are not kept during inference)."""
        images, self.images = self.images, []
        return images

    def take_image(self) -> bytes:
        """The only image's bytes, forgotten here."""
        return self.take_images()[0].data


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
        value = _loads(text)
    except _JSON_ERRORS as exc:
        raise Unprocessable(f"invalid options: options: not valid JSON ({_json_problem(exc)})",
                            code="invalid_options") from None
    if not isinstance(value, dict):
        raise Unprocessable("invalid options: options: must be a JSON object", code="invalid_options")
    return value


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _parse_form(request: Request, settings: Settings) -> FormData:
    """Starlette's multipart parser, with the file parts kept in memory up to the body limit.

    Starlette spools a file part over 1 MB to a temporary file, which the endpoint then reads
    back whole: a 2.2 MB upload took 2.4-4.7 ms to parse that way against 0.8 ms in memory
    (medians of 30, 64-256 KiB chunks). The body limit already bounds the bytes held.
    """
    async with aclosing(request.stream()) as stream:
        parser = MultiPartParser(request.headers, stream, max_files=settings.max_images + 1,
                                 max_fields=64)
        parser.spool_max_size = settings.max_body_bytes
        return await parser.parse()


async def _multipart(request: Request, settings: Settings, fields: _Collector) -> list[bytes]:
    """The uploaded image parts' bytes; the text fields go to ``fields``."""
    try:
        form = await _parse_form(request, settings)
    except ServiceError:  # e.g. 413 from the body limit while the parts stream in
        raise
    except Exception as exc:  # malformed multipart or over the part limits
        detail = str(getattr(exc, "detail", None) or exc)
        raise BadRequest(f"cannot parse the multipart body: {shown(detail, 200)}",
                         code="invalid_multipart") from None
    try:
        return await _multipart_parts(form, settings, fields)
    finally:
        # Nothing else closes the form's files when an endpoint reads the form itself.
        await form.close()


async def _multipart_parts(form: FormData, settings: Settings, fields: _Collector) -> list[bytes]:
    """The image parts' bytes of a parsed ``form`` (``file`` parts, or ``image`` ones), in order;
    its text fields go to ``fields``."""
    name = next((n for n in _IMAGE_PARTS if n in form), None)
    if name is None:
        raise BadRequest("multipart request needs a 'file' part with the image", code="missing_file")
    uploads = form.getlist(name)
    if not all(isinstance(u, UploadFile) for u in uploads):
        raise BadRequest(f"'{name}' must be a file part, not a text field", code="missing_file")
    check_image_count(len(uploads), settings)
    texts = []
    for key, value in form.multi_items():
        if key == name:
            continue
        if not isinstance(value, str):
            raise BadRequest(f"unexpected file part {shown(key)}: images go in '{name}' parts",
                             code="invalid_multipart")
        texts.append((key, value))
    fields.add_text(texts)
    return [await u.read() for u in uploads]  # type: ignore[union-attr]


def check_image_count(n: int, settings: Settings) -> None:
    """422 ``too_many_images`` past ``settings.max_images``; 400 for an empty ``images`` list."""
    if n == 0:
        raise BadRequest("'images' is empty: send at least one image", code="missing_image")
    if n > settings.max_images:
        raise Unprocessable(f"the request has {n} images; the limit is {settings.max_images} "
                            "(max_images)", code="too_many_images")


async def _json_body(request: Request, settings: Settings, fields: _Collector) -> tuple[list[Any], bool]:
    """The JSON body's images (``image``, or the items of ``images``) and whether it is a batch;
    its other fields go to ``fields``."""
    body = await request.body()
    check_body_size(len(body), settings)
    try:
        payload = await run_in_threadpool(_loads, body)  # ~1 ms per MB: off the event loop
    except _JSON_ERRORS as exc:  # UnicodeDecodeError is a ValueError too
        raise BadRequest(f"malformed JSON body: {_json_problem(exc)}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("the JSON body must be an object with an 'image' field", code="invalid_json")
    image, images = payload.pop("image", None), payload.pop("images", None)
    if image is not None and images is not None:
        raise BadRequest("the JSON body has both 'image' and 'images': send one of them",
                         code="invalid_json")
    if image is None and images is None:
        raise BadRequest("the JSON body needs an 'image' field (base64), or 'images' (a list)",
                         code="missing_image")
    for key, value in payload.items():
        fields.add_value(key, value)
    if images is None:
        return [image], False
    if not isinstance(images, list):
        raise BadRequest("'images' must be a list of base64 strings or objects with an 'image'",
                         code="invalid_json")
    check_image_count(len(images), settings)
    return images, True


def _json_image(item: Any, index: int | None, fields: RequestFields[Any], settings: Settings) -> ImagePart:
    """One JSON image (a base64 string, or in ``images`` an object with ``image`` and the task's
    extra fields) as bytes; a batch item's own problem is its error, not the request's."""
    where = "'image'" if index is None else f"images[{index}]"
    extras: dict[str, Any] = {}
    try:
        if isinstance(item, dict) and index is not None:
            unknown = sorted(set(item) - {"image", *fields.extras})
            if unknown:
                raise Unprocessable(f"{where}: unknown field {shown(unknown[0])} (an item has "
                                    f"'image'{''.join(', ' + repr(e) for e in fields.extras)})",
                                    code="invalid_options")
            extras = {k: v for k, v in item.items() if k != "image"}
            item = item.get("image")
        if not isinstance(item, str):
            raise BadRequest(f"{where} must be a base64 string", code="invalid_base64")
        return ImagePart(decode_base64(item, settings), extras)
    except ServiceError as exc:
        if index is None:
            raise
        return ImagePart(b"", extras, exc)


async def read_request(request: Request, settings: Settings, spec: RequestFields[O]) -> ParsedRequest[O]:
    """Images, options and extras of any request form (see the module docstring).

    400 for unreadable bodies, 413 over the size limit, 415 for other content types, 422 for
    invalid options. Base64 is decoded after the options are validated.
    """
    fields = _Collector(spec)
    fields.add_text(request.query_params.multi_items())
    ctype = content_type(request)
    if ctype == JSON:
        items, batch = await _json_body(request, settings, fields)
        options = fields.validated()
        images = await run_in_threadpool(
            lambda: [_json_image(item, i if batch else None, spec, settings)
                     for i, item in enumerate(items)])
        return ParsedRequest(images, options, fields.extras, batch)
    if ctype == "multipart/form-data":
        parts = await _multipart(request, settings, fields)
        options = fields.validated()
        return ParsedRequest([ImagePart(p) for p in parts], options, fields.extras, len(parts) > 1)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await request.body()
        options = fields.validated()
        return ParsedRequest([ImagePart(data)], options, fields.extras)
    raise UnsupportedMediaType(
        f"unsupported Content-Type {shown(ctype) if ctype else '(none)'}: send multipart/form-data (a 'file' "
        "part), application/json (base64 'image'), or the image bytes (image/*)",
        code="unsupported_content_type",
    )
