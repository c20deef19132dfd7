"""``GET /demo``: the demo page (static files of ``service/web/``), and ``GET /`` pointing at it.

The page is plain HTML, CSS and JavaScript without external assets; it calls the gateway's own
endpoints (``/v1/models``, ``/segment``, ``/landmarks``, ``/detect``) with relative URLs, sending
the API key typed into it as ``X-API-Key``. Only the files of ``service/web/`` listed in
:data:`FILES` are served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.errors import NotFound

WEB = Path(__file__).resolve().parents[2] / "web"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
#: Every response of the page: nothing but the gateway itself may be loaded or called.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    """The demo page."""
    return RedirectResponse("demo")


@router.get("/demo")
async def page() -> FileResponse:
    """The page itself."""
    return FileResponse(WEB / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/demo/{name}")
async def asset(name: str) -> FileResponse:
    """The page's script and style sheet (404 for any other name)."""
    if name not in FILES:
        raise NotFound(f"no demo file '{name}'")
    return FileResponse(WEB / name, media_type=FILES[name], headers=HEADERS)
