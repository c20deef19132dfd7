"""service.imaging.resize: the merge's kernels against OpenCV INTER_LINEAR (float32) and torch
F.interpolate (both align_corners), and OpenCV's image resize against the numpy kernels it replaced."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.imaging import resize as rz
from service.imaging.resize import resize_bilinear

SIZES = [((37, 53), (74, 106)), ((37, 53), (20, 31)), ((64, 48), (64, 97)), ((5, 7), (1, 1)),
         ((100, 80), (50, 40)), ((9, 13), (29, 3))]


@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_opencv_float(src, dst):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(*src, 3)).astype(np.float32)
    ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    out = resize_bilinear(img, dst, layout="hwc")
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_torch(src, dst, align_corners):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, *src)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=align_corners).numpy()
    np.testing.assert_allclose(resize_bilinear(x, dst, align_corners=align_corners, layout="nchw"), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(resize_bilinear(x[0], dst, align_corners=align_corners), ref[0], atol=1e-5, rtol=0)


def test_identity_is_copy():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = resize_bilinear(x, (3, 4), layout="hw")
    assert np.array_equal(x, y) and y is not x


def test_uint8_input_becomes_float():
    img = (np.arange(6 * 8 * 3) % 256).astype(np.uint8).reshape(6, 8, 3)
    ref = cv2.resize(img.astype(np.float32), (16, 12), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_bilinear(img, (12, 16), layout="hwc"), ref, atol=1e-4)


def _numpy_uint8_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The gateway's previous uint8 kernel: OpenCV's 8-bit INTER_LINEAR rebuilt in numpy (11-bit
    weights, integer horizontal pass, the vectorised vertical pass, INTER_AREA for exact 2x)."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()

    def coeffs(n_in: int, n_out: int, vertical: bool):
        f = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
        s_ = np.floor(f).astype(np.int64)
        f = (f - s_).astype(np.float32)
        if not vertical:
            low, high = s_ < 0, s_ >= n_in - 1
            f[low], s_[low] = 0.0, 0
            f[high], s_[high] = 0.0, n_in - 1
        w0 = np.rint((np.float32(1.0) - f) * np.float32(2048)).astype(np.int64)
        w1 = np.rint(f * np.float32(2048)).astype(np.int64)
        return np.clip(s_, 0, n_in - 1), np.clip(s_ + 1, 0, n_in - 1), w0, w1

    src = img.astype(np.int64)
    src = src[:, :, None] if src.ndim == 2 else src
    if h == 2 * out_h and w == 2 * out_w:
        out = (src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2] + 2) >> 2
    else:
        x0, x1, a0, a1 = coeffs(w, out_w, vertical=False)
        y0, y1, b0, b1 = coeffs(h, out_h, vertical=True)
        hx = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
        s0, s1 = hx[y0], hx[y1]
        out = (((s0 >> 4) * b0[:, None, None]) >> 16) + (((s1 >> 4) * b1[:, None, None]) >> 16)
        out = (out + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[:, :, 0] if img.ndim == 2 else out


def _photos():
    from skimage import data

    return (data.coffee(), data.chelsea()[:300, :400], data.astronaut()[:, :, 0], data.rocket())


@pytest.mark.parametrize("dst", [(64, 64), (473, 473), (97, 131), (600, 800), (150, 200), (1, 1),
                                 (400, 600), (300, 400), (800, 1067)])  # some: identity, exact 2x
def test_opencv_uint8_resize_equals_the_numpy_kernel_it_replaced(dst):
    from service.imaging.resize import resize_image

    for img in _photos():
        old = _numpy_uint8_resize(img, dst)
        out = resize_image(img, dst)
        assert out.shape == old.shape and out.dtype == np.uint8
        assert np.array_equal(out, old), f"{img.shape}->{dst}: {(out != old).mean():.5f} differ"


@pytest.mark.parametrize("dst", [(200, 300), (300, 451), (512, 1024), (700, 1050), (1, 1)])
def test_opencv_float_resize_equals_the_gathers_it_replaced(dst):
    """The segmentation scales' image resize: OpenCV on float pixels vs the exact numpy gathers
    the gateway used before (within float32 rounding of 0..255 pixels)."""
    from service.imaging.resize import resize_image

    for img in _photos():
        px = img.astype(np.float32)
        out = resize_image(px, dst)
        old = resize_bilinear(px, dst, layout="hwc" if px.ndim == 3 else "hw")
        assert out.shape == old.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, old, atol=1e-4, rtol=0)


# The merge's building blocks: banded GEMMs, exact gathers and the compiled 2-tap row loop, by
# blocks of rows, must equal the whole-array resize (tests above tie that to OpenCV and torch).


@pytest.mark.parametrize("src,dst", SIZES + [((128, 256), (512, 1024)), ((300, 451), (896, 1347))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gemm_resize_matches_gathers_opencv_torch(src, dst, align_corners):
    from service.imaging.resize import axis_coeffs, resample_last, resample_rows

    def resize_finite(x, size, ac):  # the merge's two passes: along W, then rows in blocks
        ch, cw = axis_coeffs(x.shape[1], size[0], ac), axis_coeffs(x.shape[2], size[1], ac)
        cols = resample_last(x, cw, size[1], ac)
        return np.concatenate([resample_rows(cols, ch, r0, min(size[0], r0 + 32))
                               for r0 in range(0, size[0], 32)], axis=1)

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, *src)).astype(np.float32)
    out = resize_finite(x, dst, align_corners)
    assert out.shape == (3, *dst) and out.dtype == np.float32
    # The gathers' arithmetic up to float rounding, on pixel-range data too.
    np.testing.assert_allclose(out, resize_bilinear(x, dst, align_corners=align_corners), atol=2e-6)
    px = x * 60 + 128
    np.testing.assert_allclose(resize_finite(px, dst, align_corners),
                               resize_bilinear(px, dst, align_corners=align_corners), atol=1e-4)
    if not align_corners:  # the mapping of OpenCV INTER_LINEAR on float data
        cv = cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (dst[1], dst[0]),
                        interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out.transpose(1, 2, 0), cv, atol=2e-6)
    if (src, dst) in SIZES:  # torch positions are float32: bigger odd ratios drift (~1e-4)
        ref = F.interpolate(torch.from_numpy(x)[None], size=dst, mode="bilinear",
                            align_corners=align_corners)[0].numpy()
        np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("src,dst", [((37, 53), (74, 106)), ((100, 80), (50, 40)), ((9, 13), (29, 3)),
                                     ((64, 48), (200, 150))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_row_blocks_and_crops(src, dst, align_corners):
    from service.imaging.resize import (
        _along, axis_coeffs, band, gather_last, matmul_last, resample_rows,
    )

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, *src)).astype(np.float32)
    ref = resize_bilinear(x, dst, align_corners=align_corners)
    ch = axis_coeffs(src[0], dst[0], align_corners)
    cw = axis_coeffs(src[1], dst[1], align_corners)
    keep = max(1, dst[1] - 2)  # a crop of the output columns
    for cols in (matmul_last(x, dst[1], align_corners, keep=keep), gather_last(x, cw.head(keep))):
        for r0, r1 in [(0, dst[0]), (0, 1), (dst[0] // 3, dst[0] // 2 + 1), (dst[0] - 1, dst[0])]:
            lo, hi = band(ch, r0, r1)
            part = cols[:, lo:hi]  # only the input rows the block reads, at their offset
            rows = resample_rows(part, ch, r0, r1, offset=lo)
            np.testing.assert_allclose(rows, ref[:, r0:r1, :keep], atol=1e-5)
            # The gathers' very arithmetic: the same bits.
            sub = rz.AxisCoeffs(*(v[r0:r1] for v in ch))
            assert np.array_equal(rows, _along(cols, sub, 1))


@pytest.mark.parametrize("w_in,w_out", [(512, 2048), (3584, 2048), (300, 451), (451, 300), (5, 7)])
def test_opencv_whole_row_pass_equals_gathers_for_any_row_count(w_in, w_out):
    """The merge's OpenCV horizontal pass: the same numbers for one row as for many (OpenCV's
    one-row path alone differs by up to 2e-4), and the exact gathers' up to float rounding."""
    from service.imaging.resize import axis_coeffs, gather_last, resample_last

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(3, 7, w_in)) * 3).astype(np.float32)
    c = axis_coeffs(w_in, w_out, False)
    whole = resample_last(x, c, w_out, False, whole_rows=True)
    np.testing.assert_allclose(whole, gather_last(x, c), atol=2e-6)
    for ch in range(3):
        for r in range(7):
            one = resample_last(x[ch : ch + 1, r : r + 1], c, w_out, False, whole_rows=True)
            assert np.array_equal(one[0, 0], whole[ch, r])
