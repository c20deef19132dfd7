"""Exception handlers: every failure becomes ``{"error": {"code", "message"}}`` with its status.

Client-facing messages of 5xx errors are the error class's generic text
(:attr:`service.errors.ServiceError.client_message`); the detailed message (backend address,
library exception) goes to the log only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.errors import ServiceError, describe_validation, error_body

log = logging.getLogger("service.http")


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The product's JSON error response."""
    return JSONResponse(error_body(code, message), status, headers=headers)


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500:
        level = logging.WARNING if exc.status_code in (503, 504) else logging.ERROR
        log.log(level, "%s %s -> %d %s: %s", request.method, request.url.path, exc.status_code,
                exc.code, exc.message)
    return error_response(exc.status_code, exc.code, exc.client_message, exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", describe_validation(exc.errors()))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def _client_disconnect(request: Request, _: ClientDisconnect) -> JSONResponse:
    # The client went away (or the server cut a slow one off) while its body was being read:
    # nobody reads this answer, and it is no error of ours worth a traceback.
    log.info("%s %s: the client disconnected before sending its whole body", request.method,
             request.url.path)
    return error_response(400, "client_disconnected", "the client disconnected")


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _client_disconnect)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
