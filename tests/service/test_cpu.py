"""service.runtime.cpu: the parallel pool and the low-priority background thread."""

from __future__ import annotations

import os
import threading

from service.runtime import cpu


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_thread_runs_at_lower_priority_in_order():
    """The early merge's thread lowers its own nice value only (the caller keeps its own) and
    runs its work in submission order."""
    mine = _nice()
    assert cpu.background(_nice).result(timeout=10) == max(mine, 10)
    assert _nice() == mine
    order: list[int] = []
    jobs = [cpu.background(lambda i=i: order.append(i)) for i in range(20)]
    for j in jobs:
        j.result(timeout=10)
    assert order == list(range(20))


def test_parallel_map_keeps_order_and_runs_inline_in_its_workers():
    """Results in input order; called from a pool (or background) thread it runs there."""
    assert cpu.parallel_map(lambda x: x * x, range(50)) == [x * x for x in range(50)]
    inner = cpu.background(lambda: cpu.parallel_map(lambda _: threading.current_thread().name,
                                                    range(4))).result(timeout=10)
    assert all(name.startswith("cpu-bg") for name in inner)
