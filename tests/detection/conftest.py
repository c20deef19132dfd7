"""Detection fixtures: a live gateway serving the session's small HRNetV2p-W18 Faster R-CNN over
real HTTP (uvicorn in a thread, embedded ONNX Runtime backend). The model itself (``det_export``,
``det_repo``) is exported once per session by tests/conftest.py, shared with tests/triton."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch

# Re-exported for the detection tests.
from tests.conftest import DET_FAST as FAST  # noqa: F401
from tests.conftest import DET_MODEL as MODEL_NAME  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_url(det_repo: Path):
    """Base URL of a running gateway serving ``det_repo``."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(repository=det_repo, backend="embedded", ort_intra_threads=1,
                        max_concurrency=1, request_timeout_s=300)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
