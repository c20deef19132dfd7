"""The gateway's one error hierarchy: every failure a client can be told about is a
:class:`ServiceError` with an HTTP status, a stable machine-readable code and a message.

Nothing here knows the web framework: the decoder, the tasks, the runner and the backends raise
these; ``service.http.handlers`` turns them into ``{"error": {"code", "message"}}`` responses.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


class ServiceError(Exception):
    """An error with an HTTP ``status_code``, a ``code`` and a human ``message``.

    Subclasses set their defaults in the class statement: ``class X(ServiceError, status=404,
    code="not_found")``; a raise site may override the code. ``retry_after`` (seconds) asks the
    client to come back later (429/503).
    """

    status_code: int = 500
    code: str = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if status is not None:
            cls.status_code = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (rounded up) when the error carries one."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(0, math.ceil(self.retry_after)))}


class BadRequest(ServiceError, status=400, code="bad_request"):
    """The request cannot be read (malformed body, missing image part, wrong model task)."""


class NotFound(ServiceError, status=404, code="not_found"):
    """The named thing does not exist."""


class ModelNotFound(NotFound, code="model_not_found"):
    """The named model is not served (by the registry or by the backend)."""


class NotAcceptable(ServiceError, status=406, code="not_acceptable"):
    """No media type the endpoint answers is acceptable to the client (``Accept``)."""


class PayloadTooLarge(ServiceError, status=413, code="payload_too_large"):
    """Body or image over the configured limits."""


class UnsupportedMediaType(ServiceError, status=415, code="unsupported_media_type"):
    """Content type or image format not supported."""


class Unprocessable(ServiceError, status=422, code="unprocessable"):
    """A readable request whose values are invalid."""


class Overloaded(ServiceError, status=429, code="overloaded"):
    """Too many requests in flight (the runner's queue, Triton's in-flight bound)."""


class Unavailable(ServiceError, status=503, code="unavailable"):
    """The backend (or the model) cannot answer now: not started, down, restarting, loading."""


class Timeout(ServiceError, status=504, code="timeout"):
    """Inference ran past its deadline."""


class BackendError(ServiceError, status=500, code="backend_error"):
    """Inference failed in the backend for another reason (logged)."""


class ConfigurationError(ServiceError, status=500, code="configuration_error"):
    """The gateway cannot start as configured (e.g. a requested execution provider is missing)."""


def describe_validation(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic error dicts as ``field.path: message; ...`` (request-part prefixes such as
    ``body``/``query`` dropped: clients know where they put a field)."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON body every error response carries."""
    return {"error": {"code": code, "message": message}}
