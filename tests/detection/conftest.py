"""Shared fixtures: one small HRNetV2-W18 Faster R-CNN, exported once per session, and a live
gateway serving it over real HTTP (uvicorn in a thread, embedded ONNX Runtime backend)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch

# Smaller RPN budget than the official 2000 proposals: same code paths, a fraction of the time.
FAST = {"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 300}
MODEL_NAME = "hrnetv2p_w18_faster_rcnn_coco_demo"


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def det_export(tmp_path_factory: pytest.TempPathFactory):
    """``ExportResult`` of one random-init detection entry, exported by the one pipeline
    (ONNX export + parity + metadata + Triton config)."""
    from model_export.pipeline import ExportRequest, export_model

    repo = tmp_path_factory.mktemp("det_repo")
    req = ExportRequest(task="detection", arch="hrnetv2p_w18", dataset="coco", name=MODEL_NAME,
                        repo=repo, random_init=True, seed=0, max_size=(480, 320),
                        parity_sizes=[(256, 384)], detection_overrides=dict(FAST),
                        instance_kind="cpu")
    return export_model(req, log=lambda _msg: None)


@pytest.fixture(scope="session")
def det_repo(det_export) -> Path:
    """The repository holding ``MODEL_NAME``."""
    return det_export.entry.entry_dir.parent


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
