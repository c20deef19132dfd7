"""Optional API keys (``HRNET_API_KEYS``): a plain ASGI middleware in front of every route.

* No key configured (the default): authentication is off.
* Keys configured (a JSON list; several at once, so a key can be rotated without downtime): every
  request outside :data:`PUBLIC_PATHS` / :data:`PUBLIC_PREFIXES` needs one of them, as
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing or wrong: 401
  ``{"error": {"code": "unauthorized", ...}}`` with ``WWW-Authenticate: Bearer``, before any of
  the body is read.
* The comparison runs in constant time against *every* configured key (``hmac.compare_digest``,
  no early exit), so neither timing nor the key's position tells anything.
* ``/metrics`` needs a key too, unless ``HRNET_METRICS_PUBLIC=true`` (a scraper on a private
  network).

The public paths are the agreed list below (probes, the documentation, the demo page and its
static files); the README's Security section lists the same.
"""

from __future__ import annotations

import hmac
import json
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_body

#: Paths served without a key when keys are configured.
PUBLIC_PATHS: frozenset[str] = frozenset({
    "/healthz", "/readyz",                                   # probes
    "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",  # the API documentation
    "/", "/demo",                                            # the demo page
})
#: Path prefixes served without a key (the static assets of the demo page and the docs).
PUBLIC_PREFIXES: tuple[str, ...] = ("/demo/", "/docs/assets/")
METRICS_PATH = "/metrics"


def is_public(path: str, metrics_public: bool = False) -> bool:
    """Whether ``path`` is served without an API key."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return True
    return metrics_public and path == METRICS_PATH


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.strip()
    return None


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time match of ``candidate`` against every key (no early exit)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


class ApiKeyMiddleware:
    """Refuse requests without a valid API key (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: list[str], metrics_public: bool = False) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # (CORS preflights never get here: the CORS middleware, outside this one, answers them.)
        if scope["type"] != "http" or not self.keys or \
                is_public(scope.get("path", ""), self.metrics_public):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope.get("headers") or [])
        if key is not None and key_matches(key, self.keys):
            await self.app(scope, receive, send)
            return
        if key is None:
            message = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        else:
            message = "the API key is not valid"
        body = json.dumps(error_body("unauthorized", message)).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="hrnet"')]})
        await send({"type": "http.response.body", "body": body})
