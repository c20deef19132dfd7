"""FastAPI dependencies: settings, backend, model registry, inference runner, timings."""

from __future__ import annotations

from fastapi import Request

from service.backends.base import Backend
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


def get_registry(request: Request) -> ModelRegistry:
    """Model lookup by name/task (``registry.resolve(name, task)``)."""
    return request.app.state.registry


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
