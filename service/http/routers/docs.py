"""``GET /docs`` (Swagger UI) and ``GET /redoc`` (ReDoc), served with local assets.

The JavaScript and CSS come from the ``fastapi-offline`` package (a maintained PyPI package that
ships Swagger UI's and ReDoc's dist files), served under ``/docs/assets/``: the pages work on a
machine without internet access, and nothing is copied into this repository. Every URL in the
pages is relative, so they also work behind a path prefix.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import NotFound

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
#: The files served under ``/docs/assets/`` (nothing else of the package's folder is reachable).
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
TITLE = "HRNetV2 inference gateway"
#: Swagger UI settings: no call to the public validator service (its badge would fetch from it),
#: "Try it out" open on every operation, request durations shown.
SWAGGER_PARAMETERS = {
    "dom_id": "#swagger-ui", "layout": "BaseLayout", "deepLinking": True,
    "validatorUrl": None, "tryItOutEnabled": True, "displayRequestDuration": True,
    "defaultModelsExpandDepth": 0,
}

#: The pages load nothing but the gateway's own files: ReDoc's side menu, for one, would fetch
#: its maker's logo from the internet (the browser blocks it; the link stays as text).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    return response


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    return _page(get_swagger_ui_html(
        openapi_url="openapi.json", title=f"{TITLE} - Swagger UI",
        swagger_js_url="docs/assets/swagger-ui-bundle.js",
        swagger_css_url="docs/assets/swagger-ui.css",
        swagger_favicon_url="docs/assets/favicon.png",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    ))


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    """ReDoc over ``/openapi.json`` (no web fonts: the system's)."""
    return _page(get_redoc_html(openapi_url="openapi.json", title=f"{TITLE} - ReDoc",
                                redoc_js_url="docs/assets/redoc.standalone.js",
                                redoc_favicon_url="docs/assets/favicon.png",
                                with_google_fonts=False))


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    """One of :data:`FILES` (404 for any other name)."""
    if name not in FILES:
        raise NotFound(f"no docs asset '{name}'")
    return FileResponse(ASSETS / name, media_type=FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})
