"""service.resize against OpenCV INTER_LINEAR (float32) and torch F.interpolate (both align_corners)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("dst", [(64, 64), (473, 473), (97, 131), (600, 800), (150, 200), (1, 1),
                                 (400, 600), (300, 400)])  # the last two: identity for some
def test_uint8_matches_opencv_bit_exact(dst):
    from skimage import data

    from service.imaging.resize import resize_uint8_opencv

    for img in (data.coffee(), data.chelsea()[:300, :400], data.astronaut()[:, :, 0]):
        ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
        out = resize_uint8_opencv(img, dst)
        assert out.shape == ref.shape and out.dtype == np.uint8
        assert np.array_equal(out, ref), f"{img.shape}->{dst}: {(out != ref).mean():.5f} differ"


# The merge's building blocks: banded GEMMs and exact gathers, by blocks of rows, must equal the
# whole-array resize (tests above tie that to OpenCV and torch).


@pytest.mark.parametrize("src,dst", SIZES + [((128, 256), (512, 1024)), ((300, 451), (896, 1347))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gemm_resize_matches_gathers_opencv_torch(src, dst, align_corners):
    from service.imaging.resize import resize_finite

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, *src)).astype(np.float32)
    out = resize_finite(x, dst, align_corners)
    assert out.shape == (3, *dst) and out.dtype == np.float32
    # The gathers' arithmetic up to float rounding, on pixel-range data too.
    np.testing.assert_allclose(out, resize_bilinear(x, dst, align_corners=align_corners), atol=2e-6)
    px = x * 60 + 128
    np.testing.assert_allclose(resize_finite(px, dst, align_corners),
                               resize_bilinear(px, dst, align_corners=align_corners), atol=1e-4)
    if not align_corners:  # the image path of make_passes: OpenCV INTER_LINEAR on float pixels
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
        axis_coeffs, band, gather_last, gather_rows, matmul_last, matmul_rows,
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
            for rows in (matmul_rows(part, ch, r0, r1, offset=lo), gather_rows(part, ch, r0, r1, lo)):
                np.testing.assert_allclose(rows, ref[:, r0:r1, :keep], atol=1e-5)
