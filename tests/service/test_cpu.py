"""service.runtime.cpu: the parallel pool, the low-priority background thread, OpenCV's threads."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

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


@pytest.mark.parametrize("threads, expected", [(1, 1), (3, 3), (0, None)])
def test_startup_sets_opencv_threads(threads: int, expected: int | None, tmp_path) -> None:
    """The gateway's start gives OpenCV ``opencv_threads`` threads per call (0: OpenCV's own
    default, one per CPU); 1 is the default setting."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.helpers import FakeDetector

    before = cv2.getNumThreads()
    cv2.setNumThreads(7)
    try:
        with TestClient(create_app(Settings(repository=tmp_path, opencv_threads=threads),
                                   backend=FakeDetector())):
            pass
        cv2.setNumThreads(-1)
        default = cv2.getNumThreads()
        cpu.configure_opencv(threads)
        got = cv2.getNumThreads()
        assert got == (default if expected is None else expected)
    finally:
        cv2.setNumThreads(before)
    assert Settings.model_fields["opencv_threads"].default == 1


def test_opencv_threads_do_not_change_resizes_of_photos() -> None:
    """OpenCV splits a call's rows among its threads: the gateway's resizes of real photos
    (uint8 images, float score maps) are the same bytes with one thread as with several."""
    from skimage import data

    from service.imaging.resize import resize_image

    before = cv2.getNumThreads()
    rng = np.random.default_rng(0)
    try:
        for photo in (data.astronaut(), data.coffee(), data.chelsea()):
            scores = rng.standard_normal((photo.shape[0] // 4, photo.shape[1] // 4, 19)
                                         ).astype(np.float32)
            outs = []
            for threads in (1, 4):
                cpu.configure_opencv(threads)
                outs.append((resize_image(photo, (1024, 1536)), resize_image(photo, (301, 457)),
                             resize_image(scores, (photo.shape[0], photo.shape[1]))))
            for one, many in zip(*outs):
                assert one.tobytes() == many.tobytes()
    finally:
        cv2.setNumThreads(before)
