"""The FastAPI application: ``uvicorn --factory service.app:create_app`` or ``python -m service``."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.base import BaseHTTPMiddleware

from service.backends.base import Backend
from service.body_limit import BodyLimitMiddleware
from service.errors import install_error_handlers
from service.metrics import Metrics, metrics_middleware
from service.metrics import router as metrics_router
from service.registry import ModelRegistry
from service.runner import InferenceRunner
from service.settings import Settings, get_settings

log = logging.getLogger("service.app")

# Routers included when their module exists (tasks are written independently).
_ROUTERS = (
    "service.routers.health",
    "service.routers.models",
    "service.routers.segment",
    "service.routers.landmarks",
    "service.routers.detect",
)


def make_backend(settings: Settings) -> Backend:
    """The backend named by ``settings.backend``."""
    if settings.backend == "triton":
        from service.backends.triton import TritonBackend  # tritonclient only when used

        return TritonBackend(settings)
    from service.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings)


def _optional_router(module: str):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), "router", None)


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """Build the gateway. ``backend`` overrides the one ``settings`` names (tests use fakes)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        be = backend or make_backend(settings)
        await be.start()
        app.state.backend = be
        app.state.registry = ModelRegistry(await be.models(), settings)
        app.state.runner = InferenceRunner(be, settings, metrics)
        log.info("serving %d models with the %s backend", len(app.state.registry.models), be.name)
        try:
            yield
        finally:
            await be.close()

    app = FastAPI(
        title="HRNetV2 inference gateway",
        version="0.1.0",
        description="Semantic segmentation, facial landmarks and detection with HRNetV2 models, "
        "served by ONNX Runtime in-process or by a Triton Inference Server.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=metrics_middleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.include_router(metrics_router)
    for module in _ROUTERS:
        router = _optional_router(module)
        if router is not None:
            app.include_router(router)
    return app
