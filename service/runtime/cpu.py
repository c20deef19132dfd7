"""The worker threads of the gateway's own CPU work: a pool for work that splits into independent
pieces (the segmentation merge's row blocks), and one low-priority thread for work started while
the request's passes still run (the early merge of a multi-scale request).

numpy's ufuncs and BLAS calls and OpenCV release the GIL, so pieces run in parallel on the cores
ONNX Runtime leaves idle (or that the merge shares with it between inferences). One process-wide
pool bounds that work whatever the number of requests in flight: more requests queue for the
same threads instead of oversubscribing the machine.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = 0
_local = threading.local()
_bg_lock = threading.Lock()
_bg: ThreadPoolExecutor | None = None
_bg_nice = 10


def available() -> int:
    """The CPUs this process may run on (its affinity mask: a container's cpuset, ``taskset``),
    not the machine's count."""
    return len(os.sched_getaffinity(0))


def workers() -> int:
    """The pool's number of threads (configured, else one per CPU of this process)."""
    return _threads or available()


def configure(threads: int) -> None:
    """Use ``threads`` workers (0: one per CPU of this process); replaces an earlier pool."""
    global _pool, _threads
    n = threads or available()
    with _lock:
        if _pool is not None and n == _threads:
            return
        old, _pool, _threads = _pool, None, n
    if old is not None:
        old.shutdown(wait=False)


def configure_background(nice: int) -> None:
    """Run background work at ``nice`` (0-19; the thread is made on first use)."""
    global _bg_nice
    _bg_nice = nice


def background(fn: Callable[[], None]) -> Future[None]:
    """``fn()`` on the process's one background thread, in submission order.

    The thread lowers its own scheduling priority (``nice``: per thread on Linux), so it yields
    to inference: a merge at nice 0 beside ONNX Runtime on both cores made inference 1.2-1.4x
    slower, at nice 10 within the noise alone and up to 5% in the gateway (so the early merge
    runs only where cores stay free: ``early_merge=auto``). One thread: enough for one merge.
    """
    global _bg
    with _bg_lock:
        if _bg is None:
            _bg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu-bg",
                                     initializer=_lower_priority, initargs=(_bg_nice,))
        return _bg.submit(fn)


def _lower_priority(nice: int) -> None:
    try:
        tid = threading.get_native_id()  # Linux: this thread only, not the process
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except (AttributeError, OSError):  # no per-thread priority here: the work still runs
        pass
    _local.worker = True  # its parallel_map calls run in the thread, at its priority


def _get() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            n = _threads or available()
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
