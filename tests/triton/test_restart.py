"""Triton dies under load: the gateway answers 503 + Retry-After (never hangs, never 500) and serves
again once Triton is back, without being restarted itself.

Each protocol gets its own tritonserver (the session's server is left alone), serving only the twin
of ``MODEL`` (``triton_lean_repo``), so each start and restart is quick.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.triton.harness import LEAN_MODEL as MODEL
from tests.triton.harness import (
    Load, Timeline, TritonInstall, TritonServer, live_gateway, load_photo,
)

CLIENT_TIMEOUT_S = 20.0
_photo = load_photo


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_killed_mid_load_then_restarted(
    protocol: str, triton_install: TritonInstall, triton_lean_repo: Path, model_repo: Path,
    tmp_path: Path,
) -> None:
    from service.settings import Settings

    server = TritonServer(triton_install, triton_lean_repo, tmp_path / "tritonserver.log")
    server.start().wait_ready()
    try:
        settings = Settings(backend="triton", triton_url=server.url(protocol), triton_protocol=protocol,
                            repository=model_repo, max_concurrency=2, max_queue=16,
                            request_timeout_s=15, retry_after_s=1)
        with live_gateway(settings) as base, Load(base, client_timeout_s=CLIENT_TIMEOUT_S) as load:
            load.wait_for(200, 5, timeout=60)
            killed_at = time.monotonic()
            server.kill()
            load.wait_for(503, 5, timeout=30, since=killed_at)
            down = httpx.get(f"{base}/readyz", timeout=10)
            assert down.status_code == 503, down.text

            restarted_at = time.monotonic()
            server.start().wait_ready()
            load.wait_for(200, 5, timeout=60, since=restarted_at)  # serving again, same gateway
            up = httpx.get(f"{base}/readyz", timeout=10)
            assert up.status_code == 200, up.text

        timeline = Timeline.of(load.answers(), killed_at, restarted_at)
        print(timeline.line(f"killed/{protocol}"))
        statuses = load.summary()
        assert set(statuses) <= {200, 503}, f"only 200 and 503 are acceptable: {statuses}"
        assert timeline.first_error_s < 5, timeline
        for a in load.answers():
            assert a.seconds < CLIENT_TIMEOUT_S
            if a.status == 503:
                assert a.retry_after is not None and int(a.retry_after) >= 1
    finally:
        server.stop()


def test_gateway_started_before_triton_serves_once_triton_is_up(
    triton_install: TritonInstall, triton_lean_repo: Path, model_repo: Path, tmp_path: Path,
) -> None:
    """A gateway that came up while Triton was down finds the models later, without a restart."""
    from service.settings import Settings

    server = TritonServer(triton_install, triton_lean_repo, tmp_path / "tritonserver.log")
    settings = Settings(backend="triton", triton_url=server.url("grpc"), triton_protocol="grpc",
                        repository=model_repo, triton_startup_wait_s=0.5, request_timeout_s=15,
                        retry_after_s=1)
    try:
        with live_gateway(settings) as base:
            down = httpx.get(f"{base}/readyz", timeout=10)
            assert down.status_code == 503 and down.headers.get("retry-after"), down.text
            early = httpx.post(f"{base}/segment", files={"file": ("x.png", _photo(), "image/png")},
                               data={"model": MODEL}, timeout=CLIENT_TIMEOUT_S)
            assert early.status_code in (404, 503), early.text
            assert early.json()["error"]["message"]

            server.start().wait_ready()
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "gateway never became ready"
                time.sleep(0.2)
            r = httpx.post(f"{base}/segment", files={"file": ("x.png", _photo(), "image/png")},
                           data={"model": MODEL}, headers={"Accept": "image/png"},
                           timeout=CLIENT_TIMEOUT_S)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
    finally:
        server.stop()
