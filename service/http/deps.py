"""FastAPI dependencies: settings, backend, model registry, runner, timings, and the
:class:`TaskContext` bundle the task endpoints take.

Every dependency is ``async def``, the cheap ones too: FastAPI runs a plain ``def`` dependency in
its thread pool, a round trip through a worker thread for a one-line lookup (three per task
request, 160 of the event loop's 1,675 busy samples in a profile of /segment at concurrency 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from service.contract import ModelMetadata
from service.errors import ServiceError
from service.http.metrics import Metrics
from service.imaging.decode import Decoded, decode
from service.runtime.backends.base import Backend
from service.runtime.registry import ModelRegistry
from service.runtime.runner import InferenceRunner
from service.settings import Settings
from service.tasks.common import Limits
from service.timings import Timings


async def get_settings(request: Request) -> Settings:
    """The app's settings (those given to ``create_app``)."""
    return request.app.state.settings


async def get_backend(request: Request) -> Backend:
    """The app's started backend."""
    return request.app.state.backend


async def current_registry(app: FastAPI) -> ModelRegistry:
    """The app's registry, rebuilt when the backend's model set changed.

    A Triton backend that was down at start-up (or restarted with other models, or with a model
    re-exported under the same name) reports its models later; following it here means the
    gateway never needs a restart for that.
    """
    registry: ModelRegistry = app.state.registry
    try:
        models = await app.state.backend.models()
    except ServiceError:
        return registry
    # Whole metadata, not just names: a same-name re-export (e.g. real weights replacing the
    # random-init demo) must not keep answering with the old labels and random_init flag.
    if models != registry.models:
        registry = app.state.registry = ModelRegistry(models, app.state.settings)
    return registry


async def get_registry(request: Request) -> ModelRegistry:
    """Model lookup by name/task (``registry.resolve(name, task)``)."""
    return await current_registry(request.app)


async def get_runner(request: Request) -> InferenceRunner:
    """Admission control + batching in front of the backend."""
    return request.app.state.runner


async def get_metrics(request: Request) -> Metrics:
    """The app's metric families."""
    return request.app.state.metrics


async def get_timings(request: Request) -> Timings:
    """This request's stage timer (observed by the metrics middleware when the response is ready)."""
    timings = getattr(request.state, "timings", None)
    if timings is None:
        timings = request.state.timings = Timings()
    return timings


@dataclass
class TaskContext:
    """Everything a task endpoint uses for one request."""

    request: Request
    settings: Settings
    registry: ModelRegistry
    runner: InferenceRunner
    timings: Timings
    image_warning: str | None = None
    """Set by :meth:`decode` when a lenient decode got through faulty data."""

    @property
    def limits(self) -> Limits:
        """The per-request limits of the settings."""
        return Limits.of(self.settings)

    def model(self, name: str | None, task: str) -> ModelMetadata:
        """The requested (or default) model of ``task``; labels this request's metrics with it."""
        meta = self.registry.resolve(name, task)
        self.request.state.model = meta.name
        return meta

    async def decode(self, data: bytes) -> np.ndarray:
        """The uploaded image as ``H x W x 3`` uint8 RGB (timed as stage ``decode``). A lenient
        decode's warning is kept for the answer's ``X-Image-Warning`` (``image_warning``)."""
        decoded = await self.decode_image(data)
        self.image_warning = decoded.warning
        return decoded.pixels

    async def decode_image(self, data: bytes) -> Decoded:
        """One uploaded image decoded with its lenient-mode warning (timed as stage ``decode``;
        the stages of several images add up)."""
        with self.timings.stage("decode"):
            return await run_in_threadpool(decode, data, self.settings)


async def task_context(
    request: Request,
    settings: Settings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    runner: InferenceRunner = Depends(get_runner),
    timings: Timings = Depends(get_timings),
) -> TaskContext:
    """The :class:`TaskContext` of this request."""
    return TaskContext(request, settings, registry, runner, timings)
