"""Test harness: install a real ``tritonserver``, run it, and serve the gateway over real HTTP.

* :func:`install_triton`: runs ``scripts/install_triton.sh`` (a cached no-op after the first run);
* :class:`TritonServer`: one ``tritonserver`` process on free ports; start, wait for readiness,
  kill (SIGKILL of its process group, stubs included), hang (SIGSTOP) and resume (SIGCONT),
  restart on the same ports;
* :class:`Load`: client threads posting ``/segment`` in a loop, recording every answer's start
  time, status and duration, and the fault :class:`Timeline` read from them;
* :func:`live_gateway`: ``create_app(settings)`` served by uvicorn on a free port in a thread.

Everything has a timeout so nothing can hang CI.
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install_triton.sh"
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 90
LEAN_MODEL = "seg_lip"  # the cheapest session model (one 96x96 pass): servers that are restarted


@dataclass(frozen=True)
class TritonInstall:
    """Paths written by ``scripts/install_triton.sh`` (its ``env.sh``)."""

    server: Path
    backends: Path
    pydeps: Path
    env: dict[str, str]


def _read_env_sh(path: Path) -> dict[str, str]:
    """``export K="V"`` lines of env.sh (with ``${LD_LIBRARY_PATH...}`` resolved from os.environ)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        key, _, raw = line[len("export "):].partition("=")
        (value,) = shlex.split(raw) or [""]
        if key == "LD_LIBRARY_PATH":
            prefix = value.split("${", 1)[0]
            old = os.environ.get("LD_LIBRARY_PATH")
            value = prefix + (":" + old if old else "")
        values[key] = value
    return values


def install_triton() -> TritonInstall:
    """Install (or reuse) the CPU tritonserver under .cache/triton; returns its paths."""
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], cwd=ROOT, capture_output=True, text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"install_triton.sh failed:\n{proc.stdout}\n{proc.stderr}"
    home = Path(os.environ.get("TRITON_HOME", ROOT / ".cache" / "triton"))
    if not home.is_absolute():
        home = ROOT / home
    env = _read_env_sh(home / "env.sh")
    install = TritonInstall(
        server=Path(env["TRITON_SERVER"]), backends=Path(env["TRITON_BACKENDS"]),
        pydeps=Path(env["TRITON_PYDEPS"]), env=env,
    )
    assert install.server.is_file() and (install.backends / "python" / "triton_python_backend_stub").is_file()
    return install


class TritonServer:
    """One ``tritonserver`` process: start, wait for readiness, kill, restart on the same ports."""

    def __init__(self, install: TritonInstall, repository: Path, log_path: Path) -> None:
        self.install = install
        self.repository = repository
        self.log_path = log_path
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def url(self, protocol: str) -> str:
        """``host:port`` of ``protocol`` ('grpc' or 'http')."""
        return self.grpc_url if protocol == "grpc" else self.http_url

    def start(self) -> "TritonServer":
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [
            str(self.install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backends}",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]
        env = dict(os.environ)
        if self.install.env.get("LD_LIBRARY_PATH"):
            env["LD_LIBRARY_PATH"] = self.install.env["LD_LIBRARY_PATH"]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        finally:
            log.close()
        return self

    def is_ready(self) -> bool:
        """Triton's own readiness (server + every model, strict readiness)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "TritonServer":
        """Block until ready; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return self
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"tritonserver not ready after {timeout} s:\n{self.log_tail()}")

    def start_ready(self, attempts: int = 2, timeout: float = READY_TIMEOUT_S) -> "TritonServer":
        """:meth:`start` + :meth:`wait_ready`, starting again (up to ``attempts`` times) when the
        process exits during start-up: on a busy machine this tritonserver sometimes fails to
        load its python-backend models in time ("failed to load all models") and exits."""
        for attempt in range(attempts):
            self.start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
                if self.is_ready():
                    return self
                time.sleep(0.2)
            if self.proc is not None and self.proc.poll() is None:
                break  # alive but not ready in time: wait_ready reports it
            if attempt + 1 < attempts:
                self.stop()
        return self.wait_ready(timeout=1)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and its stubs (a crash, as far as clients can tell)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def hang(self) -> None:
        """SIGSTOP the server process: its sockets stay open, nothing answers (a hung server,
        as far as clients can tell). Only the server itself: stopping its python-backend stubs
        too makes this tritonserver crash (SIGSEGV in libtriton_python) once it resumes, its
        stub health checks having failed meanwhile: a crash of the test double, not a hang."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`hang`."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after 15 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGCONT)  # a hung server must be able to act on SIGTERM
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # stubs left behind, if any
        self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def live_gateway(settings, timeout: float = 60.0) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Serve ``create_app(settings)`` with uvicorn on a free port; yields ``http://127.0.0.1:PORT``."""
    with serve(settings, startup_timeout=timeout) as url:
        yield url


def load_photo() -> bytes:
    """The small PNG the load posts (72x96 noise, one cheap pass of ``LEAN_MODEL``)."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Answer:
    """One request of a :class:`Load`: when it started, its status (-1: no answer), how long it
    took and its Retry-After."""

    started: float
    status: int
    seconds: float
    retry_after: str | None


class Load:
    """Client threads posting /segment (``LEAN_MODEL``) in a loop; records every :class:`Answer`."""

    def __init__(self, base: str, threads: int = 3, client_timeout_s: float = 20.0,
                 model: str = LEAN_MODEL) -> None:
        self.base = base
        self.model = model
        self.photo = load_photo()
        self.client_timeout_s = client_timeout_s
        self.results: list[Answer] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        with httpx.Client(timeout=self.client_timeout_s) as client:
            for _ in range(2000):  # bounded, whatever happens
                if self.stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.base}/segment",
                                    files={"file": ("x.png", self.photo, "image/png")},
                                    data={"model": self.model}, headers={"Accept": "image/png"})
                    status, retry = r.status_code, r.headers.get("retry-after")
                except httpx.HTTPError as exc:  # a hang ends here, as a failure of the test
                    status, retry = -1, type(exc).__name__
                with self.lock:
                    self.results.append(Answer(t0, status, time.monotonic() - t0, retry))
                if status != 200:
                    time.sleep(0.05)

    def count(self, status: int, since: float = float("-inf")) -> int:
        with self.lock:
            return sum(1 for a in self.results if a.status == status and a.started >= since)

    def wait_for(self, status: int, n: int, timeout: float, since: float = float("-inf")) -> None:
        deadline = time.monotonic() + timeout
        while self.count(status, since) < n:
            assert time.monotonic() < deadline, f"waited {timeout}s for {n} x {status}: {self.summary()}"
            time.sleep(0.05)

    def summary(self) -> dict[int, int]:
        with self.lock:
            statuses = [a.status for a in self.results]
        return {s: statuses.count(s) for s in sorted(set(statuses))}

    def answers(self) -> list[Answer]:
        with self.lock:
            return list(self.results)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.client_timeout_s + 5)


@dataclass(frozen=True)
class Timeline:
    """What clients saw around a fault: seconds from the fault to the first error answer, the
    error statuses, and seconds from the recovery (restart / SIGCONT) to the first success of a
    request sent after it."""

    first_error_s: float
    errors: dict[int, int]
    recovered_s: float
    slowest_answer_s: float

    @classmethod
    def of(cls, answers: list[Answer], fault_at: float, recovery_at: float) -> "Timeline":
        during = [a for a in answers if a.started + a.seconds >= fault_at and a.status != 200]
        first_error = min((a.started + a.seconds for a in during), default=float("nan"))
        statuses = [a.status for a in during]
        after = [a for a in answers if a.started >= recovery_at and a.status == 200]
        first_ok = min((a.started + a.seconds for a in after), default=float("nan"))
        return cls(first_error - fault_at, {s: statuses.count(s) for s in sorted(set(statuses))},
                   first_ok - recovery_at, max((a.seconds for a in answers), default=0.0))

    def line(self, what: str) -> str:
        return (f"TIMELINE {what}: first error {self.first_error_s:.2f} s after the fault, "
                f"errors {self.errors}, first success {self.recovered_s:.2f} s after recovery, "
                f"slowest answer {self.slowest_answer_s:.2f} s")
