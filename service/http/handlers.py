"""Exception handlers: every failure becomes ``{"error": {"code", "message"}}`` with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError, describe_validation, error_body

log = logging.getLogger("service.http")


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500 and exc.status_code not in (503, 504):
        log.error("%s: %s", exc.code, exc.message)
    return JSONResponse(error_body(exc.code, exc.message), exc.status_code, headers=exc.headers)


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
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
