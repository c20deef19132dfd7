"""Triton dies under load: the gateway answers 503 + Retry-After (never hangs, never 500) and serves
again once Triton is back, without being restarted itself.

Each protocol gets its own tritonserver (the session's server is left alone), serving only the twin
of ``MODEL`` (``triton_lean_repo``), so each start and restart is quick.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.triton.harness import LEAN_MODEL as MODEL
from tests.triton.harness import TritonInstall, TritonServer, live_gateway

CLIENT_TIMEOUT_S = 20.0


def _photo() -> bytes:
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Load:
    """Client threads posting /segment in a loop; records (status, seconds, Retry-After)."""

    def __init__(self, base: str, threads: int = 3) -> None:
        self.base = base
        self.photo = _photo()
        self.results: list[tuple[int, float, str | None]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            for _ in range(2000):  # bounded, whatever happens
                if self.stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.base}/segment",
                                    files={"file": ("x.png", self.photo, "image/png")},
                                    data={"model": MODEL}, headers={"Accept": "image/png"})
                    status, retry = r.status_code, r.headers.get("retry-after")
                except httpx.HTTPError as exc:  # a hang ends here, as a failure of the test
                    status, retry = -1, type(exc).__name__
                with self.lock:
                    self.results.append((status, time.monotonic() - t0, retry))
                if status != 200:
                    time.sleep(0.05)

    def count(self, status: int) -> int:
        with self.lock:
            return sum(1 for s, _, _ in self.results if s == status)

    def wait_for(self, status: int, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count(status) < n:
            assert time.monotonic() < deadline, f"waited {timeout}s for {n} x {status}: {self.summary()}"
            time.sleep(0.05)

    def summary(self) -> dict[int, int]:
        with self.lock:
            statuses = [s for s, _, _ in self.results]
        return {s: statuses.count(s) for s in sorted(set(statuses))}

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)


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
        with live_gateway(settings) as base, Load(base) as load:
            load.wait_for(200, 5, timeout=60)
            server.kill()
            load.wait_for(503, 5, timeout=30)
            down = httpx.get(f"{base}/readyz", timeout=10)
            assert down.status_code == 503, down.text

            ok_before = load.count(200)
            server.start().wait_ready()
            load.wait_for(200, ok_before + 5, timeout=60)  # serving again, same gateway
            up = httpx.get(f"{base}/readyz", timeout=10)
            assert up.status_code == 200, up.text

        statuses = load.summary()
        assert set(statuses) <= {200, 503}, f"only 200 and 503 are acceptable: {statuses}"
        for status, seconds, retry in load.results:
            assert seconds < CLIENT_TIMEOUT_S
            if status == 503:
                assert retry is not None and int(retry) >= 1
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
