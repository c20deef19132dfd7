"""The network-pixel budget is checked from the plan, before any resizing or inference."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import Unprocessable
from service.tasks import detection
from service.tasks.detection.schemas import DetectOptions
from tests.helpers import detector_metadata, limits, run_task_directly


def planned_pixels(height: int, width: int, meta, options: DetectOptions) -> int:
    """The network pixels the detection plan of an image of ``height`` x ``width`` adds up to."""
    req = detection.TASK.resolve(options, {}, meta, limits())
    return detection.TASK.plan(req, meta, (height, width)).n_pixels


class _NoRunner:
    async def run(self, *args, **kwargs):  # the budget must stop the request before this
        raise AssertionError("inference ran despite the pixel budget")


def test_detection_planned_pixels_follow_the_resize_rule() -> None:
    meta = detector_metadata()  # max_size (128, 96), pad to 32
    # 200x100 -> scale min(128/200, 96/100) = 0.64 -> 128x64 (w x h), already multiples of 32
    assert planned_pixels(100, 200, meta, DetectOptions()) == 64 * 128
    assert planned_pixels(100, 200, meta, DetectOptions(flip=True)) == 2 * 64 * 128
    two = planned_pixels(100, 200, meta, DetectOptions(scales=[1.0, 2.0]))
    assert two == 64 * 128 + 128 * 256


def test_detection_over_budget_is_422_before_inference() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    with pytest.raises(Unprocessable) as err:
        asyncio.run(run_task_directly(detection.TASK, image, detector_metadata(), _NoRunner(),
                                      DetectOptions(flip=True),
                                      limits=limits(max_detection_pixels=2 * 64 * 128 - 1)))
    assert err.value.status_code == 422 and "network-input pixels" in err.value.message
