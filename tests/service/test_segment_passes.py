"""The segmentation passes as the runner gets them: every pass equals the official construction
(float image, resized per scale, window, zero padding, then the mirror of the padded crop)."""

from __future__ import annotations

import numpy as np
import pytest

from service.imaging.resize import resize_image
from service.tasks.segmentation import plan as seg_plan
from tests.helpers import segmentation_metadata

CASES = [
    # metadata kwargs, image (h, w), scales, flip: scale 1.0 is the source size in each
    (dict(base=72, crop=(32, 64), window="cityscapes", ac=False, n_cls=3), (40, 72), [1.0], True),
    (dict(base=72, crop=(32, 64), window="cityscapes", ac=False, n_cls=3), (40, 72), [0.5, 1.0, 1.5], True),
    (dict(base=70, crop=(48, 48), window="base", ac=False, n_cls=3), (45, 70), [0.5, 1.0, 1.75], True),
    (dict(base=40, crop=(40, 40), window="base", ac=True, n_cls=3, square=40), (61, 45), [1.0, 1.25], True),
]


def _official(plan: seg_plan.SegPlan, rgb: np.ndarray) -> list[np.ndarray]:
    src = rgb if plan.source_size == plan.original_size else resize_image(rgb, plan.source_size)
    src = src.astype(np.float32)
    out = []
    for sp in plan.scales:
        img = src if sp.size == src.shape[:2] else resize_image(src, sp.size)
        h, w = sp.size
        for win in sp.windows or [seg_plan.Window(0, h, 0, w)]:
            crop = img[win.y0 : min(win.y1, h), win.x0 : min(win.x1, w)].transpose(2, 0, 1)
            padded = np.zeros((3, *sp.pass_size), np.float32)
            padded[:, : crop.shape[1], : crop.shape[2]] = crop
            out.append(padded)
            if plan.flip:
                out.append(padded[:, :, ::-1])
    return out


@pytest.mark.parametrize("kw,size,scales,flip", CASES)
def test_passes_equal_the_official_construction(kw, size, scales, flip):
    rgb = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    plan = seg_plan.plan_segmentation(size, segmentation_metadata(**kw), scales=scales, flip=flip)
    assert any(sp.size == plan.source_size for sp in plan.scales)  # the uint8 path is taken
    passes = plan.passes(rgb)
    want = _official(plan, rgb)
    assert len(passes) == len(want)
    for i, ref in enumerate(want):
        got = passes[i]["image"]
        assert got.dtype == np.float32 and passes.signature(i)[0][1] == ref.shape
        np.testing.assert_array_equal(got, ref)
