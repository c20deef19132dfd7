"""What the gateway says when it starts (issue 12, "silent misconfiguration"): its own INFO logs
appear, naming the repository, backend, providers, models and limits; a missing or empty
repository is a loud warning and ``/readyz`` says what to do."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import free_port, repo_settings

ROOT = Path(__file__).resolve().parents[2]


def test_startup_lines_name_repository_models_providers_limits(live_server, model_repo, caplog):
    with caplog.at_level(logging.INFO, logger="service"):
        live_server(repo_settings(model_repo))
    text = caplog.text
    assert str(model_repo.resolve()) in text and "runs on CPUExecutionProvider" in text
    assert "model seg_cityscapes: segmentation, hrnetv2_w18_small_v1, cityscapes, RANDOM WEIGHTS" in text
    assert "limits: body" in text and "deadline 120 s" in text
    assert "RANDOM-INIT weights" in text


def test_missing_repository_is_loud_and_readyz_says_what_to_do(live_server, tmp_path, caplog):
    missing = tmp_path / "nowhere"
    with caplog.at_level(logging.INFO, logger="service"):
        url = live_server(repo_settings(missing))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("NO MODELS" in w and "does not exist" in w and str(missing) in w for w in warnings)
    r = httpx.get(f"{url}/readyz")
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert str(missing) in detail and "HRNET_REPOSITORY" in detail
    assert "python -m model_export demo" in detail
    empty = tmp_path / "empty"
    empty.mkdir()
    url = live_server(repo_settings(empty))
    assert "holds no model" in httpx.get(f"{url}/readyz").json()["detail"]


def test_python_m_service_shows_its_own_info_logs(tmp_path):
    """The real entry point, as a user starts it: the app's INFO lines reach the terminal."""
    port = free_port()
    env = {**os.environ, "HRNET_REPOSITORY": str(tmp_path / "nowhere")}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "".join(lines)
    assert "INFO:     service.app: backend embedded, repository" in text, text
    assert "WARNING:     service.app: NO MODELS: the repository" in text, text
