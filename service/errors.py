"""The gateway's one error hierarchy: every failure a client can be told about is a
:class:`ServiceError` with an HTTP status, a stable machine-readable code and a message.

Nothing here knows the web framework: the decoder, the tasks, the runner and the backends raise
these; ``service.http.handlers`` turns them into ``{"error": {"code", "message"}}`` responses.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Iterable, Mapping

#: Longest user-supplied value echoed inside an error message (longer ones are cut, with a note).
ECHO_LIMIT = 64
#: Longest error message sent to a client (a last guard; messages are written much shorter).
MESSAGE_LIMIT = 1024


class ServiceError(Exception):
    """An error with an HTTP ``status_code``, a ``code`` and a human ``message``.

    Subclasses set their defaults in the class statement: ``class X(ServiceError, status=404,
    code="not_found")``; a raise site may override the code. ``retry_after`` (seconds) asks the
    client to come back later (429/503).
    """

    status_code: int = 500
    code: str = "internal_error"
    public: str | None = None
    """What a client is told of a 5xx of this class (the ``message``, with its backend details,
    only goes to the log); None: the message itself."""

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
    def client_message(self) -> str:
        """The message a client sees: ``message`` for 4xx; for 5xx the class's generic ``public``
        text (backend addresses, library exceptions and plugin names stay in the log)."""
        if self.status_code >= 500 and self.public is not None:
            return self.public
        return self.message

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

    public = "the inference backend is unavailable; retry later"


class Timeout(ServiceError, status=504, code="timeout"):
    """Inference ran past its deadline."""

    public = "inference did not finish within the request deadline"


class BackendError(ServiceError, status=500, code="backend_error"):
    """Inference failed in the backend for another reason (logged)."""

    public = "inference failed in the backend"


def _loc_part(part: Any) -> str:
    """One element of a validation error's location (a field name a client may have invented)."""
    text = escape_text(str(part))
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}…"


class ConfigurationError(ServiceError, status=500, code="configuration_error"):
    """The gateway cannot start as configured (e.g. a requested execution provider is missing)."""


def describe_validation(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic error dicts as ``field.path: message; ...`` (request-part prefixes such as
    ``body``/``query`` dropped: clients know where they put a field)."""
    parts = []
    for err in errors:
        loc = ".".join(_loc_part(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


# Characters shown as escapes: controls (NUL, ESC, newlines...), format characters (bidi
# overrides and isolates, zero-width joiners, BOM), separators other than the space, surrogates.
_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _escape_char(ch: str) -> str:
    if ch in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch]
    if unicodedata.category(ch) in _HIDDEN:
        n = ord(ch)
        return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
    return ch


def escape_text(text: str) -> str:
    """``text`` with every invisible or direction-changing character written as an escape
    (``\\x00``, ``\\u202e``, ``\\n``), so what a client or a log reader sees is what was sent."""
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) for ch in text)


def shown(value: Any, limit: int = ECHO_LIMIT) -> str:
    """A user-supplied value for an error message: quoted, escaped (:func:`escape_text`) and cut
    to ``limit`` characters (``'abc…' (10200 characters)``), so nothing unbounded or invisible
    is echoed back."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and value.bit_length() > 4 * limit:  # repr() may refuse it
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    else:
        text = repr(value)
    if len(text) > limit:
        return f"'{escape_text(text[:limit])}…' ({len(text)} characters)"
    return f"'{escape_text(text)}'"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON body every error response carries (the message escaped and bounded: the last
    guard for values a raise site forgot to pass through :func:`shown`)."""
    message = escape_text(message)
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + "…"
    return {"error": {"code": code, "message": message}}
