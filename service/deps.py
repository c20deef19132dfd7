"""FastAPI dependencies: settings, backend, model registry, inference runner, timings."""

from __future__ import annotations

from fastapi import FastAPI, Request

from service.backends.base import Backend, BackendError
from service.metrics import Metrics, Timings
from service.registry import ModelRegistry
from service.runner import InferenceRunner
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    """The app's settings (those given to ``create_app``)."""
    return request.app.state.settings


def get_backend(request: Request) -> Backend:
    """The app's started backend."""
    return request.app.state.backend


async def current_registry(app: FastAPI) -> ModelRegistry:
    """The app's registry, rebuilt when the backend's model set changed.

    A Triton backend that was down at start-up (or restarted with other models) reports its
    models later; following it here means the gateway never needs a restart for that.
    """
    registry: ModelRegistry = app.state.registry
    try:
        models = await app.state.backend.models()
    except BackendError:
        return registry
    if models.keys() != registry.models.keys():
        registry = app.state.registry = ModelRegistry(models, app.state.settings)
    return registry


async def get_registry(request: Request) -> ModelRegistry:
    """Model lookup by name/task (``registry.resolve(name, task)``)."""
    return await current_registry(request.app)


def get_runner(request: Request) -> InferenceRunner:
    """Admission control + batching in front of the backend."""
    return request.app.state.runner


def get_metrics(request: Request) -> Metrics:
    """The app's metric families."""
    return request.app.state.metrics


def get_timings(request: Request) -> Timings:
    """This request's stage timer (observed by the metrics middleware when the response is ready)."""
    timings = getattr(request.state, "timings", None)
    if timings is None:
        timings = request.state.timings = Timings()
    return timings


def set_model_label(request: Request, model: str) -> None:
    """Label this request's metrics with ``model``."""
    request.state.model = model
