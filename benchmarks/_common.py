"""Helpers shared by the benchmark scripts: model lookup, sample photos, the gateway as a server
process, a task run without HTTP, and the bare ONNX Runtime baseline configured and batched
exactly as the gateway's embedded backend and runner do it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.contract import ModelMetadata  # noqa: E402
from service.runtime.backends.embedded import session_options  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tasks.common import Limits, TaskDef, run_task  # noqa: E402
from service.timings import Timings  # noqa: E402
from tests.helpers import (  # noqa: E402
    process_cpu_seconds, process_memory_mb, process_minor_faults, process_system_seconds,
    reset_peak_memory,
)


class Gateway(str):
    """The base URL of a gateway process, with its ``pid`` (for its memory)."""

    pid: int

    def memory_mb(self) -> tuple[float, float]:
        """``(VmRSS, VmHWM)`` of the gateway process, MiB: resident now and at its peak."""
        return process_memory_mb(self.pid)

    def reset_peak(self) -> None:
        """Start the gateway's peak RSS afresh (the next :meth:`memory_mb` peak is from now)."""
        reset_peak_memory(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the gateway process has used so far (all its threads)."""
        return process_cpu_seconds(self.pid)

    def system_seconds(self) -> float:
        """System CPU seconds of the gateway process so far (page faults are counted here)."""
        return process_system_seconds(self.pid)

    def minor_faults(self) -> int:
        """Minor page faults of the gateway process so far."""
        return process_minor_faults(self.pid)


@contextmanager
def gateway(settings: dict[str, Any], *, startup_timeout: float = 120.0,
            root: Path = ROOT) -> Iterator[Gateway]:
    """``python -m service`` in its own process (so client and server do not share a GIL), with
    ``settings`` as ``HRNET_*`` variables; yields its base URL (a :class:`Gateway`) once
    ``/readyz`` answers 200. ``root``: the checkout whose ``service`` runs (another commit's
    worktree for a side-by-side comparison)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, **{f"HRNET_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("HRNET_ACCESS_LOG", "false")  # a line per request would drown the figures
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], cwd=root, env=env)
    url = Gateway(f"http://127.0.0.1:{port}")
    url.pid = proc.pid
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway on port {port} did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def requests_per_s(post: Callable[[httpx.Client], object], requests: int, clients: int = 4) -> float:
    """``requests`` calls of ``post`` (one request on the client it is given) shared by
    ``clients`` concurrent HTTP clients, each on its own thread and connection; requests/s."""
    lock = threading.Lock()
    done = [0]

    def client_loop() -> None:
        with httpx.Client(timeout=3600) as c:
            while True:
                with lock:
                    if done[0] >= requests:
                        return
                    done[0] += 1
                post(c)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client_loop) for _ in range(clients)]:
            f.result()
    return requests / (time.perf_counter() - t0)


def limits_for_benchmarks() -> Limits:
    """Limits that never stop a benchmark's request (its sizes are chosen by the benchmark)."""
    return Limits(max_passes=1 << 20, max_network_pixels=1 << 40, max_detection_pixels=1 << 40,
                  max_faces=1 << 10, timeout_s=3600.0)


async def run_task_once(task: TaskDef[Any, Any, Any], image: np.ndarray, meta: ModelMetadata,
                        runner: Any, options: Any, *, extras: dict[str, Any] | None = None,
                        timings: Timings | None = None) -> Any:
    """One task request as the gateway runs it, without HTTP."""
    limits = limits_for_benchmarks()
    resolved = task.resolve(options, extras or {}, meta, limits)
    return await run_task(task, image, meta, resolved, runner, limits, timings=timings)


def first_model(repo: Path, task: str) -> str | None:
    """The first entry of ``task`` in ``repo`` by name, or None."""
    for f in sorted(repo.glob("*/hrnet.json")):
        if ModelMetadata.from_json(f.read_text()).task == task:
            return f.parent.name
    return None


def photo(name: str, w: int, h: int, fmt: str = "PNG") -> tuple[np.ndarray, bytes]:
    """A scikit-image sample photo resized to ``w x h``: the RGB array and its encoded bytes."""
    from skimage import data

    im = Image.fromarray(getattr(data, name)()).convert("RGB").resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return np.asarray(im), buf.getvalue()


def bare_session(onnx_path: Path, settings: Settings):  # -> onnxruntime.InferenceSession
    """A CPU session with the embedded backend's own options, so "bare" differs only by the gateway;
    this process gets the gateway's numpy huge-page choice too (``numpy_hugepages``: with numpy's
    advice on, the bare run's fresh batch arrays may stall on page compaction, the gateway's do
    not) and its kept heap (``malloc_keep_mb``: without it a 2048x1024 pass maps its blocks over
    32 MiB afresh and faults ~300 MB in on every run)."""
    import onnxruntime as ort

    from service.runtime.memory import keep_heap, set_numpy_hugepages

    set_numpy_hugepages(settings.numpy_hugepages)
    keep_heap(settings.malloc_keep_mb)
    return ort.InferenceSession(str(onnx_path), session_options(settings),
                                providers=["CPUExecutionProvider"])


def batch_groups(signatures: list[tuple], settings: Settings, model_max: int) -> list[list[int]]:
    """The batches the gateway's runner makes of passes with these input signatures: equal
    signatures together, at most ``max_batch`` (and the model's) passes and ``max_batch_pixels``
    network pixels per batch (``service/runtime/runner.py``)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, sig in enumerate(signatures):
        groups[sig].append(i)
    out = []
    for sig, idx in groups.items():
        limit = max(1, min(model_max if model_max > 0 else 1, settings.max_batch))
        pixels = max((shape[-1] * shape[-2] for _, shape, _ in sig if len(shape) >= 2), default=0)
        if pixels:
            limit = min(limit, max(1, settings.max_batch_pixels // pixels))
        out += [idx[s: s + limit] for s in range(0, len(idx), limit)]
    return out


def materialise(passes: Any) -> list[dict[str, np.ndarray]]:
    """Every pass of a plan as named arrays (contiguous copies: what the runner stacks)."""
    return [{k: np.ascontiguousarray(v) for k, v in passes[i].items()} for i in range(len(passes))]


def run_batched(session, feeds: list[dict[str, np.ndarray]], settings: Settings,
                model_max: int) -> list[dict[str, np.ndarray]]:
    """``session.run`` over ``feeds`` batched exactly as the runner does; outputs per pass."""
    names = [o.name for o in session.get_outputs()]
    sigs = [tuple(sorted((k, v.shape, v.dtype.str) for k, v in f.items())) for f in feeds]
    out: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
    for chunk in batch_groups(sigs, settings, model_max):
        res = session.run(names, {k: np.stack([feeds[i][k] for i in chunk]) for k in feeds[chunk[0]]})
        for j, i in enumerate(chunk):
            out[i] = {n: r[j] for n, r in zip(names, res)}
    return out  # type: ignore[return-value]


def idle_cpu_note() -> str:
    """The 1-minute load average, to print beside the figures of a shared machine."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
