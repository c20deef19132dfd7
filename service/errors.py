"""API errors and the handlers that turn every failure into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.backends.base import BackendError

log = logging.getLogger("service.errors")


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message.

    Subclasses set their defaults in the class statement: ``class X(ApiError, status=404,
    code="not_found")``; a raise site may override both.
    """

    status_code: int = 400
    code: str = "bad_request"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if status is not None:
            cls.status_code = status
        if code is not None:
            cls.code = code

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class BadRequest(ApiError, status=400, code="bad_request"):
    """The request cannot be read (malformed body, missing image part, wrong model task)."""


class NotFound(ApiError, status=404, code="not_found"):
    """The named thing (usually a model) does not exist."""


class NotAcceptable(ApiError, status=406, code="not_acceptable"):
    """No media type the endpoint answers is acceptable to the client (``Accept``)."""


class PayloadTooLarge(ApiError, status=413, code="payload_too_large"):
    """Body or image over the configured limits."""


class UnsupportedMediaType(ApiError, status=415, code="unsupported_media_type"):
    """Content type or image format not supported."""


class Unprocessable(ApiError, status=422, code="unprocessable"):
    """A readable request whose values are invalid."""


class Overloaded(ApiError, status=429, code="overloaded"):
    """Too many requests (429) or the service cannot take work now (503); sets Retry-After."""

    def __init__(self, message: str, *, retry_after: float = 1.0, status_code: int = 429, **kw: Any) -> None:
        headers = {**retry_after_header(retry_after), **(kw.pop("headers", None) or {})}
        super().__init__(message, status_code=status_code, headers=headers, **kw)


class Timeout(ApiError, status=504, code="timeout"):
    """Inference ran past the request deadline."""


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (rounded up, never negative)."""
    return {"Retry-After": str(max(0, math.ceil(seconds)))}


def describe_validation(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic/FastAPI error dicts as ``field.path: message; ...`` (request-part prefixes such as
    ``body``/``query`` dropped: clients know where they put a field)."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def error_body(code: str, message: str) -> dict:
    """The JSON body every error response carries."""
    return {"error": {"code": code, "message": message}}


_BACKEND_CODES = {404: "model_not_found", 429: "overloaded", 503: "unavailable", 504: "timeout"}


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), exc.status_code, headers=exc.headers)


async def _backend_error(_: Request, exc: BackendError) -> JSONResponse:
    status = exc.status_code
    headers = retry_after_header(exc.retry_after) if exc.retry_after is not None else {}
    if status >= 500 and status not in (503, 504):
        log.error("backend error: %s", exc.message)
    return JSONResponse(
        error_body(_BACKEND_CODES.get(status, "backend_error"), exc.message), status, headers=headers
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body("invalid_request", describe_validation(exc.errors())), 422)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
