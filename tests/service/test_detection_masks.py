"""The gateway's mask paste-back and RLE against torch's grid_sample, OpenCV and pycocotools."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from service.contract import MaskProtocol
from service.tasks.detection.masks import (
    MaskRegion, average, binarize, paste_grid_sample, paste_legacy, region_rle,
)

H, W = 97, 131


def _full(region: MaskRegion) -> np.ndarray:
    out = np.zeros((H, W), region.values.dtype)
    x0, y0, x1, y1 = region.box
    out[y0:y1, x0:x1] = region.values
    return out


def _boxes(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x0, y0 = rng.uniform(-3, W - 3), rng.uniform(-3, H - 3)
        bw, bh = rng.uniform(0.0, 70, 2)  # includes (near) zero-width boxes
        b = np.array([x0, y0, x0 + bw, y0 + bh], np.float32)
        b[0::2], b[1::2] = b[0::2].clip(0, W), b[1::2].clip(0, H)
        out.append(b)
    return out


def test_grid_sample_paste_equals_mmdet_do_paste_mask() -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for box in _boxes(60, 1):
        prob = rng.random((28, 28)).astype(np.float32)
        t = torch.from_numpy(box)[None]
        x0, y0, x1, y1 = torch.split(t, 1, 1)  # mmdet 2.x _do_paste_mask, skip_empty (CPU)
        x0i, y0i = torch.clamp(t.min(0).values.floor()[:2] - 1, min=0).int().tolist()
        x1i = int(torch.clamp(t[:, 2].max().ceil() + 1, max=W))
        y1i = int(torch.clamp(t[:, 3].max().ceil() + 1, max=H))
        iy = (torch.arange(y0i, y1i).float() + 0.5 - y0) / (y1 - y0) * 2 - 1
        ix = (torch.arange(x0i, x1i).float() + 0.5 - x0) / (x1 - x0) * 2 - 1
        ix[torch.isinf(ix)] = 0
        iy[torch.isinf(iy)] = 0
        grid = torch.stack([ix[:, None, :].expand(1, iy.shape[1], ix.shape[1]),
                            iy[:, :, None].expand(1, iy.shape[1], ix.shape[1])], 3)
        ref = np.zeros((H, W), np.float32)
        ref[y0i:y1i, x0i:x1i] = F.grid_sample(torch.from_numpy(prob)[None, None], grid,
                                              align_corners=False)[0, 0].numpy()
        got = _full(paste_grid_sample(prob, box, H, W))
        np.testing.assert_allclose(got, ref, atol=2e-6)


def test_legacy_paste_equals_get_seg_masks() -> None:
    rng = np.random.default_rng(2)
    proto = MaskProtocol(paste="legacy")
    for box in _boxes(60, 3):
        box = np.minimum(box, [W - 1, H - 1, W - 1, H - 1]).astype(np.float32)
        prob = rng.random((28, 28)).astype(np.float32)
        b = box.astype(np.int32)  # mmdet v0.6 FCNMaskHead.get_seg_masks
        w, h = max(b[2] - b[0] + 1, 1), max(b[3] - b[1] + 1, 1)
        ref = np.zeros((H, W), np.uint8)
        ref[b[1]:b[1] + h, b[0]:b[0] + w] = cv2.resize(prob, (int(w), int(h))) > 0.5
        got = _full(binarize(proto, paste_legacy(prob, box, H, W)))
        assert (got == ref.astype(bool)).all()


@pytest.mark.parametrize("seed", range(3))
def test_region_rle_equals_pycocotools_encode(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cases = [MaskRegion(0, 0, np.zeros((0, 0), bool)), MaskRegion(0, 0, np.ones((H, W), bool)),
             MaskRegion(W - 1, H - 1, np.ones((1, 1), bool))]
    for _ in range(20):
        x0, y0 = int(rng.integers(0, W - 1)), int(rng.integers(0, H - 1))
        h, w = int(rng.integers(1, H - y0 + 1)), int(rng.integers(1, W - x0 + 1))
        cases.append(MaskRegion(x0, y0, rng.random((h, w)) > rng.uniform(0.1, 0.9)))
    for region in cases:
        full = _full(region).astype(np.uint8)
        ref = mask_utils.encode(np.asfortranarray(full))
        assert region_rle(region, H, W) == {"size": [H, W], "counts": ref["counts"].decode()}


def test_tta_average_over_union_then_threshold() -> None:
    a = MaskRegion(2, 3, np.full((4, 5), 0.9, np.float32))
    b = MaskRegion(4, 3, np.full((4, 5), 0.3, np.float32))
    mean = average([a, b])
    assert mean.box == (2, 3, 9, 7)
    np.testing.assert_allclose(mean.values[0], [0.45, 0.45, 0.6, 0.6, 0.6, 0.15, 0.15])
    keep = binarize(MaskProtocol(paste="grid_sample"), mean).values[0]
    assert keep.tolist() == [False, False, True, True, True, False, False]
    assert a.mirrored(20).box == (13, 3, 18, 7)
