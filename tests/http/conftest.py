"""Real-HTTP fixtures: the gateway served by uvicorn on a free local port, in a thread
(:func:`tests.live_server.serve`, re-exported here).

``live_server(settings_or_app)`` starts a server and returns its base URL; servers stop at the
end of the test. ``gateway_url`` is one module-shared server over the session's ``model_repo``.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.contract import (
    DetectionMetadata, DetectionProtocol, ExportInfo, ModelMetadata, TensorSpec, WeightsInfo,
)
from service.settings import Settings
from tests.live_server import free_port, serve

__all__ = ["FakeDetector", "detector_metadata", "fake_detector_url", "free_port", "gateway_url",
           "live_server", "repo_settings", "serve"]


@pytest.fixture
def live_server() -> Iterator[Callable[[FastAPI | Settings], str]]:
    """Factory: ``url = live_server(settings_or_app)``; every server stops after the test."""
    with ExitStack() as stack:
        yield lambda app_or_settings: stack.enter_context(serve(app_or_settings))


def repo_settings(model_repo, **overrides) -> Settings:
    """Test settings over ``model_repo`` (single ORT thread: CI has two cores)."""
    base = dict(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="module")
def gateway_url(model_repo) -> Iterator[str]:
    """A gateway over the session's test repository, shared by the tests of one module."""
    with serve(repo_settings(model_repo)) as url:
        yield url


def detector_metadata(name: str = "fake_det") -> ModelMetadata:
    """A detection entry as the export writes it (two graph inputs, three outputs), with a small
    resize limit so requests stay cheap."""
    return DetectionMetadata(
        name=name, task="detection", arch="hrnetv2p_w18", dataset="coco",
        labels=["__background__", "person", "cat"], align_corners=False,
        inputs=[TensorSpec(name="image", dtype="FP32", dims=[3, -1, -1]),
                TensorSpec(name="image_size", dtype="INT64", dims=[2])],
        outputs=[TensorSpec(name="boxes", dtype="FP32", dims=[-1, 4]),
                 TensorSpec(name="scores", dtype="FP32", dims=[-1]),
                 TensorSpec(name="labels", dtype="INT64", dims=[-1])],
        max_batch_size=1, detection=DetectionProtocol(max_size=(128, 96)),
        weights=WeightsInfo(random_init=True, origin="random-init", format="none"),
        export=ExportInfo(model_export_version="0", torch="0", onnx="0", opset=17, exported_at="now"),
    )


class FakeDetector:
    """A backend serving :func:`detector_metadata` whose 'network' returns two fixed detections
    (scores 0.9 and 0.3) per pass: exercises the /detect request and response path without a model."""

    name = "fake"

    def __init__(self) -> None:
        self.meta = detector_metadata()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def models(self) -> dict[str, ModelMetadata]:
        return {self.meta.name: self.meta}

    async def ready(self) -> bool:
        return True

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["image"])
        boxes = np.array([[4, 4, 30, 20], [10, 8, 40, 30]], np.float32)
        return {"boxes": np.repeat(boxes[None], n, 0),
                "scores": np.tile(np.array([0.9, 0.3], np.float32), (n, 1)),
                "labels": np.tile(np.array([1, 2], np.int64), (n, 1))}


@pytest.fixture(scope="module")
def fake_detector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose only model is :class:`FakeDetector`'s."""
    settings = Settings(repository=Path(tmp_path_factory.mktemp("no_repo")))
    with serve(create_app(settings, backend=FakeDetector())) as url:
        yield url
