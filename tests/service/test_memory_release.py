"""When the gateway hands memory back (``service.runtime.memory``): after a large request, once
no request has run for ``release_memory_idle_s``; at once with 0; never for small requests."""

from __future__ import annotations

import asyncio

import pytest

from service.runtime import memory

DELAY = 0.05


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(memory, "_idle", memory._IdleRelease())
    monkeypatch.setattr(memory, "release", lambda: calls.append(1.0) or True)
    return calls


def _request(loop: asyncio.AbstractEventLoop, large: bool, delay: float = DELAY) -> None:
    memory.request_started()
    memory.request_finished(loop, large=large, delay_s=delay)


def test_after_idle_only_once_per_burst(releases: list[float]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(3):  # back to back: one release, after the last
            _request(loop, large=True)
            await asyncio.sleep(DELAY / 3)
        assert releases == []
        await asyncio.sleep(DELAY * 3)
        assert len(releases) == 1
        _request(loop, large=False)  # small requests never trigger one
        await asyncio.sleep(DELAY * 3)
        assert len(releases) == 1

    asyncio.run(main())


def test_a_running_request_postpones_the_release(releases: list[float]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _request(loop, large=True)
        memory.request_started()  # another request runs past the delay
        await asyncio.sleep(DELAY * 3)
        assert releases == []
        memory.request_finished(loop, large=False, delay_s=DELAY)
        await asyncio.sleep(DELAY * 4)
        assert len(releases) == 1

    asyncio.run(main())


def test_zero_delay_releases_at_once(releases: list[float]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        memory.request_started()  # even with another request running, as before
        _request(loop, large=True, delay=0)
        await asyncio.sleep(0.05)
        assert len(releases) == 1
        memory.request_finished(loop, large=False, delay_s=0)

    asyncio.run(main())


@pytest.mark.parametrize("enabled", [False, True])
def test_startup_sets_numpy_hugepage_advice(enabled: bool, tmp_path) -> None:
    """The gateway's start applies ``numpy_hugepages`` to numpy's own switch (process-wide)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.helpers import FakeDetector

    before = memory.set_numpy_hugepages(not enabled)
    assert before is not None  # this numpy has the switch
    try:
        with TestClient(create_app(Settings(repository=tmp_path, numpy_hugepages=enabled),
                                   backend=FakeDetector())):
            pass
        assert memory.set_numpy_hugepages(enabled) is enabled
    finally:
        memory.set_numpy_hugepages(before)
    assert Settings.model_fields["numpy_hugepages"].default is False
