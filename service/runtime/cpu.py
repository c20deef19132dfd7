"""The worker threads of the gateway's own CPU work that splits into independent pieces (the
segmentation merge's row blocks).

numpy's ufuncs and BLAS calls and OpenCV release the GIL, so pieces run in parallel on the cores
ONNX Runtime leaves idle (or that the merge shares with it between inferences). One process-wide
pool bounds that work whatever the number of requests in flight: more requests queue for the
same threads instead of oversubscribing the machine.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = 0
_local = threading.local()


def configure(threads: int) -> None:
    """Use ``threads`` workers (0: one per CPU of this process); replaces an earlier pool."""
    global _pool, _threads
    n = threads or len(os.sched_getaffinity(0))
    with _lock:
        if _pool is not None and n == _threads:
            return
        old, _pool, _threads = _pool, None, n
    if old is not None:
        old.shutdown(wait=False)


def _get() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            n = _threads or len(os.sched_getaffinity(0))
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="cpu",
                                       initializer=_mark_worker)
        return _pool


def _mark_worker() -> None:
    _local.worker = True


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` on the pool, results in order. A call made from a pool thread
    runs in that thread (no waiting on its own pool, so never a deadlock)."""
    items = list(items)
    if len(items) <= 1 or getattr(_local, "worker", False):
        return [fn(x) for x in items]
    return list(_get().map(fn, items))
