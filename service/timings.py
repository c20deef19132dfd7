"""Wall-clock time per stage of one request (decode, preprocess, queue, inference, postprocess,
encode): tasks and the runner add to it; responses and the metrics report it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

STAGES = ("decode", "preprocess", "queue", "inference", "postprocess", "encode")


class Timings:
    """Seconds per stage of one request (stages may repeat; times add up)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block as stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def as_ms(self) -> dict[str, float]:
        """Stage times in milliseconds, rounded to 0.01 ms."""
        return {k: round(v * 1000.0, 2) for k, v in self.stages.items()}
