"""The FastAPI application: ``uvicorn --factory service.app:create_app`` or ``python -m service``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.http.auth import ApiKeyMiddleware
from service.http.body_limit import BodyLimitMiddleware
from service.http.handlers import install_error_handlers
from service.http.metrics import Metrics, MetricsMiddleware
from service.http.startup import no_models_hint, random_init_warning, startup_lines
from service.http.routers import (
    detect, docs, faces, health, landmarks, metrics, models, segment, web,
)
from service.imaging import resample_kernels
from service.runtime import cpu, memory
from service.runtime.backends.base import Backend
from service.runtime.registry import ModelRegistry
from service.runtime.runner import InferenceRunner
from service.settings import Settings

log = logging.getLogger("service.app")


def configure_logging(level: str) -> None:
    """Make the gateway's own logs (``service.*``) visible at ``level``: uvicorn configures only
    its own loggers. A handler is added unless the process configured logging already (a root
    handler: then the records go there)."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


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
    configure_logging(settings.log_level)
    app_metrics = Metrics(slots=settings.max_concurrency)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cpu.configure(settings.cpu_threads)
        cpu.configure_background(settings.background_nice)
        memory.set_numpy_hugepages(settings.numpy_hugepages)
        memory.keep_heap(settings.malloc_keep_mb)  # before the backend's threads
        be = backend or make_backend(settings)
        await be.start()
        app.state.backend = be
        app.state.registry = ModelRegistry(await be.models(), settings)
        app.state.runner = InferenceRunner(be, settings, app_metrics)
        models = app.state.registry.models
        if any(m.task == "segmentation" for m in models.values()):
            # The merge's loops: ~1 s and ~54 MiB of numba's compiler now, not in the first
            # request; gateways without a segmentation model never load numba.
            resample_kernels.compile_all()
        for line in startup_lines(settings, be.name, models, be.providers()):
            log.info("%s", line)
        for warning in be.warnings():
            log.warning("%s", warning)
        if models:
            log.info("serving %d models with the %s backend", len(models), be.name)
        else:
            log.warning("!" * 78)
            log.warning("NO MODELS: %s", no_models_hint(settings, be.name))
            log.warning("!" * 78)
        if (warning := random_init_warning(models)) is not None:
            log.warning("%s", warning)
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
        docs_url=None,  # routers/docs.py serves /docs and /redoc with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    # Outside the body limit (a request without a key is refused before its body is read),
    # inside CORS (browsers' preflights carry no key).
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys,
                       metrics_public=settings.metrics_public)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    for module in (health, models, segment, landmarks, detect, faces, metrics, docs, web):
        app.include_router(module.router)
    return app
