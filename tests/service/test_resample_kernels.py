"""service.imaging.resample_kernels: the compiled 2-tap row loop must give the numpy gathers'
very bits (``inf`` and ``nan`` included), and the fused argmax the labels of ``np.argmax`` over
those rows, ties to the lower class, on real photos' logits; the plain argmax loop that of
``np.argmax`` and of OpenCV's ``reduceArgMax``, and the running sweep that of numpy's, which
they replaced."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.imaging import resample_kernels as rk
from service.imaging.resize import AxisCoeffs, _along, axis_coeffs, band, resample_last
from service.tasks.segmentation import scores
from service.tasks.segmentation.scores import upsampled_labels
from tests.helpers import photo_logits

SIZES = [(64, 256), (256, 64), (61, 244), (75, 31), (1, 9), (9, 1), (17, 17)]


def _sub(c: AxisCoeffs, start: int, stop: int) -> AxisCoeffs:
    return AxisCoeffs(*(v[start:stop] for v in c))


@pytest.mark.parametrize("h_in,h_out", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_rows_equal_the_gathers_bit_for_bit(h_in, h_out, align_corners):
    """Every block of output rows, from only the input rows it reads (at their offset), is the
    gathers' ``x[i0] * w0 + x[i1] * w1`` exactly, on a photo's logits and on pixel-range data."""
    c = axis_coeffs(h_in, h_out, align_corners)
    for x in (photo_logits("astronaut", h_in, 23, 5), photo_logits("coffee", h_in, 40, 3) * 90 + 7):
        whole = _along(x, c, 1)
        for r0, r1 in [(0, h_out), (0, 1), (h_out // 3, h_out // 2 + 1), (h_out - 1, h_out)]:
            lo, hi = band(c, r0, r1)
            got = rk.rows(x[:, lo:hi], c.i0, c.i1, c.w0, c.w1, r0, r1, offset=lo)
            assert got.dtype == np.float32 and got.shape == (x.shape[0], r1 - r0, x.shape[2])
            assert np.array_equal(got, whole[:, r0:r1])


def test_rows_take_read_only_strided_and_other_dtypes():
    """Read-only arrays (the shared coefficient tables, frozen), strided views and float64 data
    give the same numbers as a fresh float32 copy."""
    c = axis_coeffs(30, 71)
    x = photo_logits("chelsea", 30, 50, 4)
    ref = rk.rows(x, c.i0, c.i1, c.w0, c.w1, 0, 71)
    frozen = x.copy()
    frozen.setflags(write=False)
    assert not c.i0.flags.writeable
    assert np.array_equal(rk.rows(frozen, c.i0, c.i1, c.w0, c.w1, 0, 71), ref)
    wide = np.zeros((4, 30, 100), np.float32)
    wide[:, :, ::2] = x
    assert np.array_equal(rk.rows(wide[:, :, ::2], c.i0, c.i1, c.w0, c.w1, 0, 71), ref)
    assert np.array_equal(rk.rows(x.astype(np.float64), c.i0, c.i1, c.w0, c.w1, 0, 71), ref)
    assert rk.rows(x, c.i0, c.i1, c.w0, c.w1, 5, 5).shape == (4, 0, 50)


def test_non_finite_values_spread_as_in_the_gathers():
    """``inf`` times a zero weight is ``nan`` in the gathers and in ``F.interpolate``: the loop
    does the same arithmetic, so the same positions are inf and nan."""
    c = axis_coeffs(12, 48)
    x = photo_logits("coffee", 12, 16, 3)
    x[0, 4, 2:5] = np.inf
    x[1, 7, 9] = -np.inf
    x[2, 0, 0] = np.nan
    got = rk.rows(x, c.i0, c.i1, c.w0, c.w1, 0, 48)
    want = _along(x, c, 1)
    np.testing.assert_array_equal(got, want)  # NaN where NaN, inf where inf
    assert np.isnan(got).any() and np.isinf(got).any()


@pytest.mark.parametrize("name,h,w,n_cls", [("astronaut", 64, 128, 19), ("rocket", 37, 55, 7),
                                            ("chelsea", 8, 300, 2), ("coffee", 50, 1, 4)])
def test_rows_argmax_equals_argmax_of_the_rows(name, h, w, n_cls):
    """The fused loop's labels are ``np.argmax`` over the scores :func:`rows` computes, for
    every block of rows, also where logits rounded to quarters make exact ties (lower class)."""
    for lg in (photo_logits(name, h, w, n_cls, seed=1), np.round(photo_logits(name, h, w, n_cls) * 4) / 4):
        lg = lg.astype(np.float32)
        for h_out, ac in ((4 * h, False), (4 * h - 3, True), (max(1, h // 2), False)):
            c = axis_coeffs(h, h_out, ac)
            scores = rk.rows(lg, c.i0, c.i1, c.w0, c.w1, 0, h_out)
            want = np.argmax(scores, axis=0)
            got = np.full((h_out, w), -1, np.int32)
            step = max(1, h_out // 3)
            for r0 in range(0, h_out, step):
                rk.rows_argmax(lg, c.i0, c.i1, c.w0, c.w1, r0, min(h_out, r0 + step), got)
            np.testing.assert_array_equal(got, want)
    ties = np.zeros((3, 4, 5), np.float32)  # all equal: class 0 everywhere
    out = np.full((8, 5), 7, np.int32)
    c = axis_coeffs(4, 8)
    rk.rows_argmax(ties, c.i0, c.i1, c.w0, c.w1, 0, 8, out)
    assert (out == 0).all()


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea", "rocket"])
def test_argmax_equals_numpy_and_opencv_on_photos(name):
    """The classes loop gives ``np.argmax(axis=0)`` and OpenCV's ``reduceArgMax`` (the kernel
    it replaced in the merge) exactly, on photo logits, on the same rounded to quarters (ties:
    the lower class), on 2D and 4D arrays, on views that are not contiguous, and on noise."""
    lg = photo_logits(name, 72, 96, 19, seed=2).astype(np.float32)
    noise = np.random.default_rng(5).standard_normal((19, 40, 50)).astype(np.float32)
    for x in (lg, np.round(lg * 4) / 4, noise, lg[:, 9:31], lg[:, :, 5:60], lg[:, 3]):
        want = np.argmax(x, axis=0)
        got = rk.argmax(x)
        assert got.dtype == np.int32 and got.shape == x.shape[1:]
        np.testing.assert_array_equal(got, want)
        cv = cv2.reduceArgMax(np.ascontiguousarray(x).reshape(x.shape[0], -1), 0)
        np.testing.assert_array_equal(got, cv.reshape(x.shape[1:]))
    x4 = lg.reshape(19, 8, 9, 96)
    np.testing.assert_array_equal(rk.argmax(x4), np.argmax(x4, axis=0))
    assert not rk.argmax(lg[:1]).any()  # one class: all 0
    assert rk.argmax(lg[:, :0]).shape == (0, 96)
    with pytest.raises(ValueError, match="one class"):
        rk.argmax(lg[:0])


def _numpy_sweep(x: np.ndarray, best: np.ndarray, labels: np.ndarray, c0: int) -> None:
    """The numpy sweep the compiled one replaced: compare, max and masked store per class."""
    better = np.empty(best.shape, np.bool_)
    for k in range(x.shape[0]):
        np.greater(x[k], best, out=better)
        np.maximum(best, x[k], out=best)
        np.copyto(labels, c0 + k, where=better)


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea", "rocket"])
def test_sweep_equals_the_numpy_sweep_on_photos(name):
    """Chunk by chunk, the compiled sweep keeps the numpy sweep's running maximum and labels
    exactly: on photo logits, on the same rounded to quarters (ties: the lower class), and with
    NaN and infinities in them (NaN spreads into the maximum as np.maximum spreads it)."""
    lg = photo_logits(name, 40, 70, 11, seed=4).astype(np.float32)
    odd = lg.copy()
    odd[3, 5, 7] = odd[0, 6, 6] = odd[10, 39, 69] = np.nan
    odd[2, 1, 1] = odd[7, 2, 3] = np.inf
    odd[:, 9, 9] = -np.inf
    odd[4, 12, 0] = -np.inf
    for x in (lg, np.round(lg * 4) / 4, odd):
        shape = x.shape[1:]
        best, labels = np.full(shape, -np.inf, np.float32), np.zeros(shape, np.int32)
        want_best, want = best.copy(), labels.copy()
        for c0 in range(0, 11, 4):
            rk.sweep(x[c0 : c0 + 4], best, labels, c0)
            _numpy_sweep(x[c0 : c0 + 4], want_best, want, c0)
        np.testing.assert_array_equal(labels, want)
        np.testing.assert_array_equal(best, want_best)  # NaN where NaN
    assert np.isnan(best).sum() == 3 and (best == np.inf).sum() == 2 and best[9, 9] == -np.inf
    np.testing.assert_array_equal(labels[9, 9], 0)  # all -inf: none is strictly above -inf
    with pytest.raises(ValueError, match="C-contiguous"):
        rk.sweep(lg, np.zeros((70, 40), np.float32).T, np.zeros((40, 70), np.int32), 0)
    with pytest.raises(ValueError, match="int32"):
        rk.sweep(lg, np.zeros((40, 70), np.float32), np.zeros((40, 70), np.int64), 0)
    with pytest.raises(ValueError, match="must be"):
        rk.sweep(lg, np.zeros((40, 71), np.float32), np.zeros((40, 71), np.int32), 0)


def test_bounds_are_checked_before_the_loops_run():
    """The loops do not check bounds themselves: taps outside the input, rows outside the
    coefficients and a label map of the wrong type are refused first."""
    c = axis_coeffs(10, 40)
    x = np.zeros((2, 10, 6), np.float32)
    with pytest.raises(ValueError, match="taps"):
        rk.rows(x[:, :5], c.i0, c.i1, c.w0, c.w1, 0, 40)  # rows past 5 read input rows 5..9
    with pytest.raises(ValueError, match="taps"):
        rk.rows(x, c.i0, c.i1, c.w0, c.w1, 0, 4, offset=1)  # reads input row 0, not held
    with pytest.raises(ValueError, match="outside"):
        rk.rows(x, c.i0, c.i1, c.w0, c.w1, 30, 41)
    with pytest.raises(ValueError, match="int32"):
        rk.rows_argmax(x, c.i0, c.i1, c.w0, c.w1, 0, 40, np.zeros((40, 6), np.int64))
    with pytest.raises(ValueError, match="fit"):
        rk.rows_argmax(x, c.i0, c.i1, c.w0, c.w1, 0, 40, np.zeros((20, 6), np.int32))
    with pytest.raises(ValueError, match="no classes"):
        rk.rows_argmax(x[:0], c.i0, c.i1, c.w0, c.w1, 0, 40, np.zeros((40, 6), np.int32))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("blocks", [2, 7, 40])
def test_upsampled_labels_of_a_whole_pass(align_corners, blocks, monkeypatch):
    """A single pass's labels (by row blocks on the pool, each block's W pass from only the
    1/4-resolution rows it reads, a padded pass cropped) equal ``np.argmax`` of the same two
    resamples stored in full, however many blocks there are."""
    monkeypatch.setattr(scores, "LABEL_BLOCKS_PER_WORKER", blocks)
    lg = photo_logits("astronaut", 40, 60, 19, seed=4)
    pass_h, pass_w, h, w = 160, 240, 157, 233
    ch = axis_coeffs(40, pass_h, align_corners).head(h)
    cw = axis_coeffs(60, pass_w, align_corners).head(w)
    got = upsampled_labels(lg, ch, cw, pass_w, align_corners)
    cols = resample_last(lg, cw, pass_w, align_corners, True, whole_rows=True)
    want = np.argmax(rk.rows(cols, ch.i0, ch.i1, ch.w0, ch.w1, 0, h), axis=0)
    assert got.shape == (h, w) and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_compile_all_is_idempotent():
    rk.compile_all()
    loops = dict(rk._loops())
    rk.compile_all()
    assert rk._loops() == loops and set(loops) == {"rows", "argmax", "classes", "sweep"}
