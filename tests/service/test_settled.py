"""service.tasks.segmentation.settled (labels of the single whole-image pass computed only where
the class changes) against ``F.interpolate`` + ``argmax`` and against the dense merge it replaces,
on logits with the structure of real photos (scikit-image's), odd sizes and both
``align_corners`` conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.imaging.resize import axis_coeffs, resize_image
from service.tasks.segmentation import merge as seg_merge
from service.tasks.segmentation import plan as seg_plan
from service.tasks.segmentation import settled
from tests.helpers import photo_logits, segmentation_metadata

PHOTOS = ["coffee", "astronaut", "chelsea", "rocket"]


def _official(logits: np.ndarray, size: tuple[int, int], ac: bool) -> np.ndarray:
    up = F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=ac)
    return up[0].argmax(0).numpy()


def _dense(logits: np.ndarray, size: tuple[int, int], ac: bool) -> np.ndarray:
    """Every pixel's scores with the gateway's coefficients, in ``F.interpolate``'s order (W taps,
    then H), and their argmax: what the shortcut must equal exactly. (PyTorch derives its weights
    in float32 and differs from these by up to ~1e-5 relative: near-ties may go the other way.)"""
    ch, cw = axis_coeffs(logits.shape[1], size[0], ac), axis_coeffs(logits.shape[2], size[1], ac)
    u = logits[:, :, cw.i0] * cw.w0 + logits[:, :, cw.i1] * cw.w1
    up = u[:, ch.i0] * ch.w0[:, None] + u[:, ch.i1] * ch.w1[:, None]
    return up.argmax(0)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("ac", [False, True])
def test_equals_upsample_argmax_on_photos(name, ac):
    h, w, n_cls = 97, 131, 12
    logits = photo_logits(name, h, w, n_cls)
    size = (4 * h - 3, 4 * w - 1)  # a pass cropped to the image: not a whole multiple of 4
    got = settled.settled_upsample_argmax(logits, axis_coeffs(h, size[0], ac), axis_coeffs(w, size[1], ac))
    assert got.dtype == np.uint8 and got.shape == size
    want = _dense(logits, size, ac)
    assert len(np.unique(want)) >= 6
    np.testing.assert_array_equal(got, want)
    assert float((got == _official(logits, size, ac)).mean()) >= 0.9999  # the merge tests' bound is 0.9995


def test_most_cells_settle_on_a_photo():
    """The shortcut is taken: most of a photo's cells are filled without scores."""
    logits = photo_logits("coffee", 100, 150, 12)
    top = settled.top_class(logits)
    assert 0 < (top == settled.UNSETTLED).sum() < 100  # integer colours: a few exact ties
    cells = settled._cells(axis_coeffs(150, 600))
    col_agree = settled._agree(top[:, cells.i0], top[:, cells.i1])
    assert 0.5 < float((col_agree != settled.UNSETTLED).mean()) < 1.0


def test_ties_keep_the_lower_class():
    """Duplicated classes tie everywhere: the lower one wins, as in ``argmax``; the top class of a
    tied pixel is unsettled, never one of the tied classes."""
    base = photo_logits("astronaut", 40, 60, 5)
    logits = np.concatenate([base[:3], base[2:3], base[3:]])  # class 3 copies class 2
    assert (settled.top_class(logits) == 3).sum() == 0
    size = (160, 240)
    got = settled.settled_upsample_argmax(logits, axis_coeffs(40, size[0]), axis_coeffs(60, size[1]))
    want = _dense(logits, size, False)
    assert (want == 2).any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2)])
def test_tiny_maps(shape):
    logits = photo_logits("coffee", 8, 8, 4)[:, : shape[0], : shape[1]].copy()
    logits += np.random.default_rng(1).normal(size=logits.shape).astype(np.float32)
    for size in [(shape[0] * 4, shape[1] * 4), (5, 3)]:
        got = settled.settled_upsample_argmax(logits, axis_coeffs(shape[0], size[0]),
                                              axis_coeffs(shape[1], size[1]))
        np.testing.assert_array_equal(got, _dense(logits, size, False))


def _single_pass(size: tuple[int, int], n_cls: int, ac: bool, flip: bool) -> seg_plan.SegPlan:
    meta = segmentation_metadata(base=max(size), crop=(256, 256), window="cityscapes", ac=ac,
                                 n_cls=n_cls)
    plan = seg_plan.plan_segmentation(size, meta, scales=[1.0], flip=flip)
    assert len(plan.scales) == 1 and plan.scales[0].windows is None
    return plan


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("ac", [False, True])
def test_merge_equals_the_dense_merge(ac, flip, monkeypatch):
    """The merge's single whole-pass case through the shortcut and through the dense blocks."""
    monkeypatch.setattr(settled, "MAX_UNSETTLED", 1.0)  # small photos: many class changes
    plan = _single_pass((150, 223), 9, ac, flip)
    h, w = -(-plan.scales[0].pass_size[0] // 4), -(-plan.scales[0].pass_size[1] // 4)
    logits = [photo_logits("chelsea", h, w, 9, seed=s) for s in range(plan.n_passes)]
    fast = seg_merge.merge_segmentation(plan, logits)
    assert fast.labels.dtype == np.uint8 and fast.confidence is None
    monkeypatch.setattr(settled, "applies", lambda *_: False)
    dense = seg_merge.merge_segmentation(plan, logits)
    assert dense.labels.dtype != np.uint8
    np.testing.assert_array_equal(fast.labels, dense.labels)


def test_falls_back_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(settled, "MAX_UNSETTLED", 1.0)
    plan = _single_pass((60, 80), 6, False, False)
    lg = photo_logits("coffee", 15, 20, 6)
    cw = axis_coeffs(20, 80)
    assert settled.applies(lg, cw, with_confidence=False)
    # The confidence map needs every pixel's scores.
    conf = seg_merge.merge_segmentation(plan, [lg], with_confidence=True)
    assert conf.confidence is not None and conf.labels.dtype != np.uint8
    assert not settled.applies(lg, cw, with_confidence=True)
    # Non-finite logits: argmax's nan and inf rules are the dense path's business.
    bad = lg.copy()
    bad[2, 3, 4] = np.inf
    assert not settled.applies(bad, cw, with_confidence=False)
    out = seg_merge.merge_segmentation(plan, [bad])
    assert out.labels.dtype != np.uint8 and out.labels[13, 17] == 2
    # Class indices past uint8.
    assert not settled.applies(np.zeros((255, 2, 2), np.float32), axis_coeffs(2, 8), False)


def test_noisy_logits_take_the_dense_merge():
    """Where most cells' corners disagree (noise), computing them cell by cell is slower than
    the dense merge: the estimate says so and the merge takes the dense path."""
    plan = _single_pass((256, 384), 8, False, False)
    noisy = np.random.default_rng(3).normal(size=(8, 64, 96)).astype(np.float32)
    smooth = photo_logits("rocket", 64, 96, 8, blur=3.0)
    cw = axis_coeffs(96, 384)
    assert settled.unsettled_fraction(noisy, cw) > 0.5 > settled.MAX_UNSETTLED
    assert settled.unsettled_fraction(smooth, cw) < settled.MAX_UNSETTLED
    assert seg_merge.merge_segmentation(plan, [noisy]).labels.dtype != np.uint8
    assert seg_merge.merge_segmentation(plan, [smooth]).labels.dtype == np.uint8
    # The estimate samples an eighth of the rows; on a photo it is near the whole count.
    top = settled.top_class(smooth)
    cx = settled._cells(cw)
    cols = settled._agree(top[:, cx.i0], top[:, cx.i1])
    whole = float((settled._agree(cols[:-1], cols[1:]) == settled.UNSETTLED).mean())
    assert abs(settled.unsettled_fraction(smooth, cw) - whole) < 0.05


@pytest.mark.parametrize("n_cls", [3, 20])
def test_noise_many_possible_classes_and_tasks(n_cls, monkeypatch):
    """Noisy logits: nearly every cell unsettled, every group of possible-class counts (up to all
    classes) taken, and the cells split over many pool tasks."""
    monkeypatch.setattr(settled, "MIN_CELLS", 64)
    monkeypatch.setattr(settled, "TASK_BYTES", 128 * 16 * n_cls)  # 128 cells a task
    rng = np.random.default_rng(n_cls)
    logits = (rng.normal(size=(n_cls, 33, 47)) * rng.uniform(0.01, 3, size=(n_cls, 1, 1))
              ).astype(np.float32)
    corners = np.stack([logits[:, :-1, :-1], logits[:, :-1, 1:], logits[:, 1:, :-1],
                        logits[:, 1:, 1:]]).reshape(4, n_cls, -1)
    counts = set(settled.possible(corners).sum(axis=0).tolist())
    assert max(counts) >= min(7, n_cls) and min(counts) <= 2
    for size, ac in [((130, 185), False), ((99, 141), True)]:
        got = settled.settled_upsample_argmax(logits, axis_coeffs(33, size[0], ac),
                                              axis_coeffs(47, size[1], ac))
        np.testing.assert_array_equal(got, _dense(logits, size, ac))


def test_uint8_labels_answer_like_int32_labels():
    """The shortcut's uint8 map gives the same answer as the dense merge's int32 one, in every
    output the JSON has (stats, RLE, polygons, PNGs, overlay) and in the binary formats."""
    from service.tasks.segmentation import respond as seg_respond
    from service.tasks.segmentation.merge import MergeResult
    from service.tasks.segmentation.plan import SegmentationRequest
    from service.tasks.segmentation.schemas import SegmentOptions

    from skimage import data

    meta = segmentation_metadata(base=160, crop=(256, 256), window="cityscapes", ac=False, n_cls=9)
    plan = seg_plan.plan_segmentation((120, 160), meta, scales=[1.0], flip=False)
    labels = settled.settled_upsample_argmax(photo_logits("coffee", 30, 40, 9),
                                             axis_coeffs(30, 120), axis_coeffs(40, 160))
    rgb = resize_image(np.ascontiguousarray(data.coffee()), (120, 160))
    opts = SegmentOptions(rle=True, polygons=True, overlay=True, overlay_format="png")
    req = SegmentationRequest(options=opts, scales=[1.0], flip=False, window="cityscapes")
    answers = [seg_respond.respond(rgb, meta, req, plan, MergeResult(lab, None))
               for lab in (labels, labels.astype(np.int32))]
    assert answers[0].model_dump() == answers[1].model_dump()
    for media in seg_respond.MEDIA_TYPES[1:]:
        got = [seg_respond.respond(rgb, meta, req, plan, MergeResult(lab, None), media)
               for lab in (labels, labels.astype(np.int32))]
        assert got[0].data == got[1].data and got[0].headers == got[1].headers
