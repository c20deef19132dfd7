"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.http.deps import current_registry
from service.http.schemas import Health, Readiness
from service.http.startup import no_models_hint

router = APIRouter(tags=["health"])
log = logging.getLogger("service.http")


@router.get("/healthz", summary="Liveness: the process answers", operation_id="healthz",
            response_model=Health)
async def healthz() -> dict:
    """Always 200 while the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and backend answering",
            operation_id="readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Not ready: the backend is "
                             "starting or down, or serves no model (`detail` says what to do); "
                             "with `Retry-After`."}})
async def readyz(request: Request) -> JSONResponse:
    """200 when the backend is ready and serves at least one model, else 503."""
    backend = getattr(request.app.state, "backend", None)
    registry = None
    if backend is not None:
        registry = await current_registry(request.app)
    ready = False
    detail = "backend not started"
    if backend is not None:
        try:
            ready = await backend.ready()
            detail = "ok" if ready else "backend not ready"
        except Exception as exc:  # a failing probe is "not ready", never a 500
            log.warning("readiness probe failed: %s: %s", type(exc).__name__, exc)
            detail = "backend error"  # the details (addresses, client errors) only in the log
    models = sorted(registry.models) if registry is not None else []
    if ready and not models:
        ready, detail = False, "no models loaded"
    if not models and backend is not None:
        detail = f"{detail}: {no_models_hint(request.app.state.settings, backend.name)}"
    body = {
        "status": "ready" if ready else "not_ready",
        "detail": detail,
        "backend": getattr(backend, "name", None),
        "models": models,
        "providers": backend.providers() if backend is not None else {},
        "warnings": backend.warnings() if backend is not None else [],
    }
    return JSONResponse(body, status_code=200 if ready else 503, headers=None if ready else {"Retry-After": "1"})
