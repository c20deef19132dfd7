"""The one interface every inference backend implements (embedded ONNX Runtime, Triton).

Tasks see only this interface, so they never know which backend runs them. Arrays are numpy;
the leading dimension of every input is the batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from service.contract import ModelMetadata


class BackendError(Exception):
    """Base of backend failures; carries an HTTP status for the gateway's error handler."""

    status_code = 500

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ModelNotFound(BackendError):
    """The named model is not served."""

    status_code = 404


class BackendUnavailable(BackendError):
    """The backend (or the model) cannot answer now; clients should retry later (503)."""

    status_code = 503


class BackendOverloaded(BackendError):
    """Too many requests in flight; clients should retry later (429)."""

    status_code = 429


class BackendTimeout(BackendError):
    """An inference call ran past its deadline (504)."""

    status_code = 504


@runtime_checkable
class Backend(Protocol):
    """Runs batches of network passes for named models."""

    name: str

    async def start(self) -> None:
        """Load or discover models. May be called again to refresh."""

    async def close(self) -> None:
        """Release sessions, channels and threads."""

    async def models(self) -> dict[str, ModelMetadata]:
        """The served models by name, with their repository metadata."""

    async def ready(self) -> bool:
        """True when models are loaded and the backend answers."""

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. ``inputs`` maps input tensor names to arrays with a leading batch dim.

        Returns every output of the model by name. Raises :class:`BackendError` subclasses.
        """
