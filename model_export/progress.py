"""Progress lines of an export: where they go, and timed stages."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: A sink for progress lines.
Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """Default progress sink."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def stage(log: Log, title: str) -> Iterator[None]:
    """Log ``title``, run the block, log its duration."""
    log(f"[model_export] {title} ...")
    t0 = time.perf_counter()
    yield
    log(f"[model_export] {title}: done in {time.perf_counter() - t0:.1f}s")
