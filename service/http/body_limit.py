"""Request body size limit, enforced on declared *and* streamed (chunked) bodies.

A plain ASGI middleware (add it outside the others): a declared ``Content-Length`` over the limit
is answered 413 before anything is read; a body without one (chunked transfer) is counted as it
streams in, and the read that crosses the limit raises :class:`PayloadTooLarge`, answered with the
same 413 JSON. Nothing past the limit is ever buffered.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, error_body


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_413(send, f"request body of {int(declared)} bytes exceeds the limit of "
                            f"{self.limit} bytes")
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.limit} bytes", code="payload_too_large"
                    )
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            # Inside a route the app's handlers already answered 413; a read outside one (in a
            # middleware, or a task group's task) surfaces here instead.
            too_large = _find_too_large(exc)
            if too_large is None or started:
                raise
            await _send_413(send, too_large.message)


def _find_too_large(exc: BaseException) -> PayloadTooLarge | None:
    if isinstance(exc, PayloadTooLarge):
        return exc
    for inner in getattr(exc, "exceptions", ()):  # an ExceptionGroup from a task group
        found = _find_too_large(inner)
        if found is not None:
            return found
    return None


async def _send_413(send: Send, message: str) -> None:
    body = json.dumps(error_body("payload_too_large", message)).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
