"""The HTTP server's configuration: one function, used by ``python -m service`` and by the tests.

uvicorn alone holds a connection forever while a client sends its headers one byte a second
(there is no header timeout), its default ``httptools`` parser has no header size limit, and the
errors its parser produces are plain text. The gateway therefore runs uvicorn with its ``h11``
parser and :class:`GatewayProtocol`, a small subclass that adds, per connection:

* a **header timeout**: the request line and headers must arrive within ``http_header_timeout_s``
  of the connection opening (or of the first byte of the next request on a kept-alive
  connection); a connection that sends nothing is closed after the same time;
* a **body timeout** with a minimum rate (Apache ``mod_reqtimeout``'s rule): the body must
  arrive within ``http_body_timeout_s`` after the headers, plus one second per
  ``http_body_min_rate`` bytes received, so a 10 B/s body or a ``Content-Length: 1000`` with
  10 bytes sent is cut off, and a large upload at a sane rate is not; time during which the
  server itself has paused reading (the application has not consumed what came) does not count;
* **size limits**: request line + headers at most ``http_max_header_bytes`` (h11's
  ``max_incomplete_event_size``) and at most ``http_max_headers`` header fields (431);
* **request smuggling guards**: ``Content-Length`` together with ``Transfer-Encoding`` is 400;
* a **bound on open connections** (``http_max_connections``): one more is answered 503 and closed
  at once, so a flood of half-open connections holds at most that many descriptors, each for at
  most the header timeout;
* **one send per answer**: what the server writes in one event-loop turn (uvicorn writes a
  response's head, body and end apart) leaves in one ``send()``, up to 64 KiB, so a process
  killed mid-answer never leaves its peer with headers and no body: nginx can retry a request on
  another replica only until the first byte of an answer reached it;
* every error the server answers itself (malformed request, bad ``Content-Length``, oversize
  headers, timeouts, too many connections) in the product's JSON shape
  ``{"error": {"code", "message"}}`` with ``Connection: close``.

WebSockets are off (the gateway has none) and the ``Server`` header is not sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import error_body, escape_text
from service.settings import Settings

log = logging.getLogger("service.http.server")

#: After answering an error the server stops writing but reads (and drops) what the client still
#: sends for this long before closing: closing with unread data would reset the connection and
#: the client might never see the answer (nginx's "lingering close").
LINGER_S = 1.0

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 503: "Service Unavailable"}


@dataclass(frozen=True)
class HttpLimits:
    """The per-connection limits of :class:`GatewayProtocol` (from the ``http_*`` settings)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    body_min_rate: int = 4096
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 1000
    retry_after_s: int = 1

    @classmethod
    def of(cls, settings: Settings) -> "HttpLimits":
        """The limits configured in ``settings``."""
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            body_min_rate=settings.http_body_min_rate,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            max_connections=settings.http_max_connections,
            retry_after_s=settings.retry_after_s,
        )


_last_refusal_log = [float("-inf"), 0]


def _warn_refusal(open_now: int, limit: int) -> None:
    """Log refused connections at most once every 10 s (a flood must not flood the log too)."""
    _last_refusal_log[1] += 1
    now = time.monotonic()
    if now - _last_refusal_log[0] >= 10.0:
        log.warning("refused %d connection(s): %d open (limit %d)", _last_refusal_log[1],
                    open_now, limit)
        _last_refusal_log[:] = [now, 0]


def error_bytes(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete ``HTTP/1.1`` error response in the product's JSON shape, closing the connection."""
    body = json.dumps(error_body(code, message)).encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


#: Writes of one loop turn are joined up to this size; a larger body goes out as it is (joining
#: it would copy megabytes, and it could not leave in one piece anyway).
COALESCE_BYTES = 64 * 1024


class _TurnWriter:
    """A transport whose writes of one event-loop turn leave in one ``write`` (one ``send()``).

    uvicorn writes the response head when the application starts its answer and the body when
    it sends it: two syscalls in the same turn. A replica SIGKILLed between them (a loaded
    process can be descheduled there) left a client of nginx with a header and no body, once in
    1,800 requests of ``tests/deploy/test_replicas.py``. Everything else is the transport's own.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._size + len(data) > COALESCE_BYTES:
            self.flush()
            self._transport.write(data)
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._size += len(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Hand what this turn wrote to the transport (the loop calls it at the turn's end)."""
        if not self._pending:
            return
        data, self._pending, self._size = b"".join(self._pending), [], 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _GuardedConnection(h11.Connection):
    """h11's server connection, telling :class:`GatewayProtocol` about every event it parses
    (the protocol may refuse a request head before the application sees it)."""

    def __init__(self, protocol: "GatewayProtocol", max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._protocol = protocol

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            self._protocol._on_event(event)
        except h11.RemoteProtocolError as exc:
            self._protocol._protocol_error = exc
            raise
        return event


class GatewayProtocol(H11Protocol):
    """uvicorn's h11 protocol with header/body timeouts, header limits, a connection bound and
    JSON errors (see the module docstring). Limits come from ``config.hrnet_http_limits``."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: HttpLimits = getattr(config, "hrnet_http_limits", None) or HttpLimits()
        self.conn = _GuardedConnection(self, self.limits.max_header_bytes)
        self._phase = "head"  # head -> body -> app -> idle (kept alive) -> head ...
        self._timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_received = 0
        self._paused_since: float | None = None
        self._protocol_error: h11.RemoteProtocolError | None = None
        self._refused = False

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_TurnWriter(transport, self.loop))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self._refused = True
            _warn_refusal(len(self.connections) - 1, self.limits.max_connections)
            self._close_with(503, "too_many_connections",
                             f"the server has {self.limits.max_connections} open connections; "
                             "retry later", retry_after=self.limits.retry_after_s)
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._phase == "closing":
            return  # answered and closing: drop what still comes
        if self._phase == "idle":  # the first bytes of the next request on a kept-alive connection
            self._phase = "head"
            self._arm(self.limits.header_timeout_s, self._header_timeout)
        super().data_received(data)

    def on_response_complete(self) -> None:
        if self._phase == "app":
            self._phase = "idle"
        super().on_response_complete()

    # -- events (from _GuardedConnection) ---------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h11.Request):
            self._check_head(event)
            self._phase = "body"
            self._body_started = time.monotonic()
            self._body_received = 0
            self._paused_since = None
            self._arm(self.limits.body_timeout_s, self._body_timeout)
        elif isinstance(event, h11.Data):
            self._body_received += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            if self._phase == "body":
                # The application may have answered before the body ended (401, 415, ...): then
                # the connection is idle now, and the next request head gets its timeout.
                answered = self.cycle is not None and self.cycle.response_complete
                self._phase = "idle" if answered else "app"
                self._cancel()
                if answered:  # uvicorn's idle timer (armed at the answer, stopped by the body)
                    self._unset_keepalive_if_required()
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _check_head(self, request: h11.Request) -> None:
        # h11 bounds only a head that is still incomplete; one that arrived whole is measured here.
        size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if size > self.limits.max_header_bytes:
            raise h11.RemoteProtocolError("Receive buffer too long", error_status_hint=431)
        if len(request.headers) > self.limits.max_headers:
            raise h11.RemoteProtocolError(
                f"more than {self.limits.max_headers} header fields", error_status_hint=431)
        names = {name.lower() for name, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise h11.RemoteProtocolError(
                "both Content-Length and Transfer-Encoding are set", error_status_hint=400)

    # -- timers ----------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._cancel()
        self._timer = self.loop.call_later(max(0.0, delay), callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self._phase != "head" or self.transport.is_closing():
            return
        log.info("closing a connection: no complete request head within %g s",
                 self.limits.header_timeout_s)
        self._close_with(408, "request_timeout",
                         f"the request headers did not arrive within "
                         f"{self.limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        self._timer = None
        if self._phase != "body" or self.transport.is_closing():
            return
        now = time.monotonic()
        if self.flow.read_paused:  # we stopped reading, not the client: that time is not its
            if self._paused_since is None:
                self._paused_since = now
            self._arm(0.5, self._body_timeout)
            return
        if self._paused_since is not None:
            self._body_started += now - self._paused_since
            self._paused_since = None
        rate = self.limits.body_min_rate
        deadline = (self._body_started + self.limits.body_timeout_s
                    + (self._body_received / rate if rate > 0 else 0.0))
        if now < deadline:
            self._arm(deadline - now, self._body_timeout)
            return
        log.info("closing a connection: %d body bytes in %.1f s (timeout %g s + 1 s per %d B)",
                 self._body_received, now - self._body_started, self.limits.body_timeout_s, rate)
        self._close_with(408, "request_timeout",
                         f"the request body did not arrive in time ({self._body_received} bytes "
                         f"in {now - self._body_started:.0f} s; the server waits "
                         f"{self.limits.body_timeout_s:g} s plus 1 s per {rate} bytes)")

    # -- answers the server gives itself ------------------------------------------------------

    def _close_with(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        """Answer ``status`` in JSON (unless the application already started an answer) and close."""
        self._cancel()
        cycle = self.cycle
        # While a request head is awaited, any cycle is the previous request's (answered): a
        # new answer is due. Past the head, the current request may have its answer already.
        answered = self._phase != "head" and cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True  # the application, if still running, answers no one
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        if not answered:
            self.transport.write(error_bytes(status, code, message, retry_after))
        self._phase = "closing"
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            pass
        self.flow.resume_reading()  # drain what the client still sends until the close
        self._timer = self.loop.call_later(min(LINGER_S, self.limits.header_timeout_s),
                                           self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """A malformed request (h11's or our own :meth:`_check_head`): JSON, then close."""
        exc, self._protocol_error = self._protocol_error, None
        status = getattr(exc, "error_status_hint", 400) or 400
        reason = escape_text(str(exc) if exc is not None else msg)[:200]
        if status == 431:
            code = "headers_too_large"
            if "Receive buffer too long" in reason:
                reason = (f"the request line and headers are over {self.limits.max_header_bytes} "
                          "bytes (a long query string counts)")
        elif status == 501:
            code = "not_implemented"
        else:
            code = "bad_http_request"
        log.info("malformed HTTP request answered %d: %s", status, reason)
        self._close_with(status, code, f"malformed HTTP request: {reason}")


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of the gateway: ``app`` (an ASGI app, or an import string with
    ``factory=True``) served with :class:`GatewayProtocol` and the ``http_*`` limits of
    ``settings``. ``overrides`` replace uvicorn arguments (tests: ``host``, ``port``)."""
    kwargs: dict[str, Any] = dict(
        host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=settings.access_log,
        http=GatewayProtocol, ws="none", lifespan="on", server_header=False,
        timeout_keep_alive=settings.http_keepalive_timeout_s,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
    )
    kwargs.update(overrides)
    config = uvicorn.Config(app, **kwargs)
    config.hrnet_http_limits = HttpLimits.of(settings)  # type: ignore[attr-defined]
    return config
