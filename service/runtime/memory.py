"""The process's memory: kept for reuse between runs, handed back after large requests.

A large request (a 2048x1024 image at 6 scales + flip) briefly needs 1.2-1.4 GB: ONNX Runtime's
activations, the passes' logits and the merge's working set. With glibc's defaults much of it
went back to the system as soon as it was freed (per-thread heaps, blocks over 32 MiB mapped
afresh) and every run faulted it in again: 1.9-2.1 million page faults and 13.4-15.8 s for that
request, against 240 thousand (2400 back to back) and 9.4-10.1 s with :func:`keep_heap`'s one
kept heap, whose peak is higher (1240 vs 974-1021 MiB; the official code's 2653 MiB). Kept
memory stays with the process, so ``malloc_trim(0)`` (:func:`release`) returns the free pages
after a large request (measured: 1.2 GB -> 0.14 GB); ONNX Runtime's own arena is off by default
for the same reason (``HRNET_ORT_CPU_ARENA``).

The trim waits until the process has run no request for ``release_memory_idle_s`` after the
large one (default 2 s; 0: at once): returned pages must be faulted in again by the next large
request, which on this project's virtual machines made a 30-pass merge take 5.8 s instead of
1.8 s, and a single 2048x1024 pass's inference 1.24x instead of 1.04x the bare run.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Callable

log = logging.getLogger("service.runtime.memory")


def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (finding it may run ``ldconfig``), or None."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()
# glibc's own functions; None elsewhere (musl, macOS): nothing to trim or tune this way.
_TRIM: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)
_MALLOPT: Callable[[int, int], int] | None = getattr(_LIBC, "mallopt", None)
# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# The highest mmap threshold older glibc versions accept (half their 64 MiB heap size).
_MMAP_THRESHOLD_OLD_MAX = 32 << 20


def keep_heap(keep_mb: int) -> bool:
    """Make glibc keep freed memory for the next run: one heap for all threads, blocks of up to
    ``keep_mb`` MiB from it, and free memory at its top handed back to the system only beyond
    ``keep_mb`` (or when :func:`release` runs). 0 leaves glibc's defaults. Returns whether it
    was applied (False: 0, or no glibc). Call it before the threads that allocate start.

    With glibc's defaults a thread that allocates may get a heap of its own (ONNX Runtime's and
    the CPU pool's threads) of at most 64 MiB, which hands memory back once it is free, and
    blocks above 32 MiB are mapped afresh each time: a run then faults its activations in again.
    Measured on 2 cores (``bench_segment.py``'s heap section, two gateways side by side): a
    2048x1024 single pass 15 vs 78800 page faults per request, 10 vs 170 ms of system CPU, HTTP
    time 0.88x; where a 600x400 request at scale 0.25 drew its own thread heaps (not every
    process does), 0.2 vs 5300 faults and its inference stage 20-21 vs 31-32 ms.
    """
    if keep_mb <= 0 or _MALLOPT is None:
        return False
    keep = min(keep_mb << 20, 2**31 - 1)  # mallopt takes an int
    # The mmap threshold first: setting the trim threshold freezes glibc's dynamic one at its
    # current value (128 KiB at start), which would map every larger block afresh.
    if not _MALLOPT(_M_MMAP_THRESHOLD, keep):
        _MALLOPT(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_OLD_MAX)
    _MALLOPT(_M_TRIM_THRESHOLD, keep)
    _MALLOPT(_M_ARENA_MAX, 1)
    return True


def set_numpy_hugepages(enabled: bool) -> bool | None:
    """Whether numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on
    its large arrays from now on; returns the previous choice (None where numpy has no switch).

    numpy does so by default. Where the kernel's THP ``defrag`` setting is ``madvise`` (Debian's
    default), each first touch of such a page may compact memory synchronously: measured here,
    a 2048x1024 6-scale + flip merge took 3.3 s right after its memory was handed back, against
    1.7-2.0 s without the advice, and 1.7-2.0 s warm either way. This is numpy's own switch, the
    one its ``NUMPY_MADVISE_HUGEPAGE`` variable sets at import.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    switch = getattr(multiarray, "_set_madvise_hugepage", None)
    return None if switch is None else bool(switch(bool(enabled)))


def release() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class _IdleRelease:
    """When to call :func:`release`: once the process has run no request for ``delay_s`` after
    a large one. Handing the pages back costs the next large request their faulting in again
    (measured: a 30-pass merge 5.8 s right after a release, 1.8 s with the heap kept), so
    requests that follow each other keep a warm heap and an idle gateway still returns to its
    resting memory."""

    def __init__(self) -> None:
        self.active = 0
        self.generation = 0

    def started(self) -> None:
        self.active += 1

    def finished(self, loop: asyncio.AbstractEventLoop, large: bool, delay_s: float) -> None:
        self.active -= 1
        if not large:
            return
        if delay_s <= 0:
            loop.run_in_executor(None, release)  # off the request's path (~25 ms)
            return
        self.generation += 1
        loop.call_later(delay_s, self._check, loop, self.generation, delay_s)

    def _check(self, loop: asyncio.AbstractEventLoop, generation: int, delay_s: float) -> None:
        if generation != self.generation:
            return  # a later large request has its own check
        if self.active:
            loop.call_later(delay_s, self._check, loop, generation, delay_s)
            return
        loop.run_in_executor(None, release)


_idle = _IdleRelease()


def request_started() -> None:
    """A task request starts running (its planning done)."""
    _idle.started()


def request_finished(loop: asyncio.AbstractEventLoop, *, large: bool, delay_s: float) -> None:
    """A task request ended; ``large``: it used at least ``release_memory_pixels``. Memory is
    handed back ``delay_s`` after the last large request once no request runs (0: at once)."""
    _idle.finished(loop, large, delay_s)
