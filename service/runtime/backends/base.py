"""The one interface every inference backend implements (embedded ONNX Runtime, Triton).

Tasks see only this interface (through the runner), so they never know which backend runs them.
Arrays are numpy; the leading dimension of every input is the batch. Failures are
:mod:`service.errors` exceptions: :class:`~service.errors.ModelNotFound`,
:class:`~service.errors.Unavailable` (retry later), :class:`~service.errors.Overloaded`,
:class:`~service.errors.Timeout` and :class:`~service.errors.BackendError`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from service.contract import ModelMetadata


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

    def providers(self) -> dict[str, list[str]]:
        """What runs each model (ONNX Runtime execution providers, or the Triton backend)."""

    def warnings(self) -> list[str]:
        """What the backend could not do as configured (shown by ``/readyz``)."""

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. ``inputs`` maps input tensor names to arrays with a leading batch dim.

        Returns every output of the model by name.
        """


#: Optional capability (not part of :class:`Backend`): ``merge_models() -> set[str]``, the models
#: whose segmentation merge graph the backend runs as model ``contract.merge_model_name(name)``
#: after the network's outputs came back (the embedded backend has it).
MERGE_CAPABILITY = "merge_models"
#: Optional capability: ``served_merge(name) -> str | None``, the backend model that takes a
#: segmentation request's passes and answers the merged label map, so that the network's
#: outputs never leave the server (Triton's ``<name>__segment``, model_export/served_merge/).
SERVED_MERGE_CAPABILITY = "served_merge"
