"""The kept heap (``service.runtime.memory.keep_heap``, setting ``malloc_keep_mb``): memory a
worker thread frees is reused by its next run instead of being faulted in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.runtime import memory

ROOT = Path(__file__).resolve().parents[2]

# A worker thread allocates, touches and frees a 40 MiB array (above glibc's largest dynamic
# mmap threshold, 32 MiB) five times; it prints whether the setting applied and the fewest page
# faults of one round after the first. numpy's huge-page advice is off, as in the gateway.
_ROUNDS = """
import resource, sys, threading
import numpy as np
from service.runtime import memory
memory.set_numpy_hugepages(False)
applied = memory.keep_heap(int(sys.argv[1]))
faults = []
def work():
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(10 << 20, np.float32)
        del a
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(applied, min(faults[1:]))
"""


def _rounds(keep_mb: int) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, str(keep_mb)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(memory._MALLOPT is None, reason="no glibc mallopt on this platform")
def test_kept_heap_reuses_freed_memory() -> None:
    applied, kept = _rounds(256)
    default_applied, default = _rounds(0)
    assert applied and not default_applied
    # glibc's defaults map the block afresh each round: 10240 faults of 4 KiB pages here.
    assert kept < 100 and kept * 20 < default, (kept, default)


def test_startup_keeps_the_heap(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The gateway's start applies ``malloc_keep_mb`` (process-wide)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.helpers import FakeDetector

    calls: list[int] = []
    monkeypatch.setattr(memory, "keep_heap", lambda mb: calls.append(mb) or True)
    with TestClient(create_app(Settings(repository=tmp_path, malloc_keep_mb=77),
                               backend=FakeDetector())):
        pass
    assert calls == [77]
    assert Settings.model_fields["malloc_keep_mb"].default == 1024
