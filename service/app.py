"""The FastAPI application: ``uvicorn --factory service.app:create_app`` or ``python -m service``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.base import BaseHTTPMiddleware

from service.http.body_limit import BodyLimitMiddleware
from service.http.handlers import install_error_handlers
from service.http.metrics import Metrics, metrics_middleware
from service.http.routers import detect, faces, health, landmarks, metrics, models, segment
from service.runtime import cpu
from service.runtime.backends.base import Backend
from service.runtime.registry import ModelRegistry
from service.runtime.runner import InferenceRunner
from service.settings import Settings

log = logging.getLogger("service.app")


def make_backend(settings: Settings) -> Backend:
    """The backend named by ``settings.backend``."""
    if settings.backend == "triton":
        from service.runtime.backends.triton import TritonBackend  # tritonclient only when used

        return TritonBackend(settings)
    from service.runtime.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings)


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """Build the gateway. ``backend`` overrides the one ``settings`` names (tests use fakes)."""
    settings = settings or Settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cpu.configure(settings.cpu_threads)
        be = backend or make_backend(settings)
        await be.start()
        app.state.backend = be
        app.state.registry = ModelRegistry(await be.models(), settings)
        app.state.runner = InferenceRunner(be, settings, app_metrics)
        log.info("serving %d models with the %s backend", len(app.state.registry.models), be.name)
        try:
            yield
        finally:
            await be.close()

    app = FastAPI(
        title="HRNetV2 inference gateway",
        version="0.1.0",
        description="Semantic segmentation, facial landmarks and detection with HRNetV2 models "
        "(and face detection with MediaPipe BlazeFace), served by ONNX Runtime in-process or by "
        "a Triton Inference Server.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    install_error_handlers(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=metrics_middleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    for module in (health, models, segment, landmarks, detect, faces, metrics):
        app.include_router(module.router)
    return app
