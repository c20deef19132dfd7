"""Triton hung (SIGSTOP) under load, over gRPC and HTTP: the gateway answers 504 at its Triton
deadline (never hangs, never 500), /readyz says 503 without hanging, and once Triton resumes
(SIGCONT) the same gateway serves again. (Killed + restarted: test_restart.py.)

Each case prints its timeline (``pytest -s``): seconds from the fault to the first error, the
error statuses, seconds from SIGCONT to the first success of a request sent after it. Short
configured timeouts keep each case to well under 30 s.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.triton.harness import Load, Timeline, TritonInstall, TritonServer, live_gateway

TRITON_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 4.0
CLIENT_TIMEOUT_S = 15.0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_hung_mid_load_then_resumed(
    protocol: str, triton_install: TritonInstall, triton_lean_repo: Path, model_repo: Path,
    tmp_path: Path,
) -> None:
    from service.settings import Settings

    server = TritonServer(triton_install, triton_lean_repo, tmp_path / "tritonserver.log")
    server.start_ready()
    try:
        settings = Settings(backend="triton", triton_url=server.url(protocol), triton_protocol=protocol,
                            repository=model_repo, max_concurrency=2, max_queue=16,
                            request_timeout_s=REQUEST_TIMEOUT_S, triton_timeout_s=TRITON_TIMEOUT_S,
                            retry_after_s=1)
        with live_gateway(settings) as base, Load(base, client_timeout_s=CLIENT_TIMEOUT_S) as load:
            load.wait_for(200, 5, timeout=60)
            hung_at = time.monotonic()
            server.hang()
            load.wait_for(504, 3, timeout=TRITON_TIMEOUT_S * 4, since=hung_at)
            t0 = time.monotonic()
            down = httpx.get(f"{base}/readyz", timeout=CLIENT_TIMEOUT_S)
            assert down.status_code == 503, down.text
            assert time.monotonic() - t0 < 8, "the readiness probe hung with Triton"

            resumed_at = time.monotonic()
            server.resume()
            load.wait_for(200, 5, timeout=30, since=resumed_at)  # serving again, same gateway
            deadline = time.monotonic() + 15
            while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "the gateway never became ready again"
                time.sleep(0.2)

        timeline = Timeline.of(load.answers(), hung_at, resumed_at)
        print(timeline.line(f"hung/{protocol}"))
        statuses = load.summary()
        assert set(statuses) <= {200, 503, 504}, f"only 200, 503 and 504 are acceptable: {statuses}"
        assert 504 in timeline.errors, timeline
        # The first 504 comes at the Triton deadline (plus scheduling), not later.
        assert timeline.first_error_s < TRITON_TIMEOUT_S + 2.5, timeline
        assert timeline.recovered_s < 10, timeline
        for a in load.answers():
            assert a.status != -1 and a.seconds < REQUEST_TIMEOUT_S + 2, a
    finally:
        server.stop()
