"""API errors and the handlers that turn every failure into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.backends.base import BackendError

log = logging.getLogger("service.errors")


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status_code: int = 400
    code: str = "bad_request"

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


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status_code = 422
    code = "unprocessable"


class Overloaded(ApiError):
    """Too many requests (429) or the service cannot take work now (503); sets Retry-After."""

    status_code = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, status_code: int = 429, **kw) -> None:
        headers = kw.pop("headers", None) or {}
        headers.setdefault("Retry-After", str(max(0, math.ceil(retry_after))))
        super().__init__(message, status_code=status_code, headers=headers, **kw)


class Timeout(ApiError):
    status_code = 504
    code = "timeout"


def error_body(code: str, message: str) -> dict:
    """The JSON body every error response carries."""
    return {"error": {"code": code, "message": message}}


_BACKEND_CODES = {404: "model_not_found", 429: "overloaded", 503: "unavailable", 504: "timeout"}


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), exc.status_code, headers=exc.headers)


async def _backend_error(_: Request, exc: BackendError) -> JSONResponse:
    status = exc.status_code
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
    if status >= 500 and status not in (503, 504):
        log.error("backend error: %s", exc.message)
    return JSONResponse(
        error_body(_BACKEND_CODES.get(status, "backend_error"), exc.message), status, headers=headers
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return JSONResponse(error_body("invalid_request", "; ".join(parts) or "invalid request"), 422)


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
