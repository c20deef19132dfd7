"""The answer encoders: label maps as PNG with zlib's run-length strategy, still lossless."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from service.imaging import encode
from service.imaging.palette import full_palette


def _regions(h: int = 384, w: int = 512, classes: int = 19) -> np.ndarray:
    """A label map of large regions with ragged borders, like a trained model's."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    wobble = rng.integers(0, 3, (h, w))
    return (((yy + wobble) // 48) * 3 + (xx + wobble) // 64) % classes


def _idat_size(png: bytes) -> int:
    """Total size of the IDAT chunks (the compressed pixels)."""
    pos, size = 8, 0
    while pos < len(png):
        n = int.from_bytes(png[pos : pos + 4], "big")
        if png[pos + 4 : pos + 8] == b"IDAT":
            size += n
        pos += 12 + n
    return size


@pytest.mark.parametrize("dtype,classes", [(np.uint8, 19), (np.uint16, 300)])
def test_label_png_is_lossless(dtype, classes):
    labels = _regions(classes=classes).astype(dtype)
    labels[0, 0] = classes - 1
    back = np.asarray(Image.open(io.BytesIO(encode.label_png(labels, None))))
    np.testing.assert_array_equal(back.astype(np.int64), labels.astype(np.int64))


def test_label_png_uses_run_length_strategy():
    labels = _regions().astype(np.uint8)
    rle = encode.label_png(labels, None)
    im = Image.fromarray(labels, "P")
    im.putpalette(full_palette(None).reshape(-1).tolist())
    default = encode.png_bytes(im)
    # Same pixels, different deflate stream: Z_RLE finds the runs of a class map more compactly.
    assert _idat_size(rle) < _idat_size(default)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(rle))), np.asarray(Image.open(io.BytesIO(default))))
    assert zlib.Z_RLE == encode.Z_RLE


def test_gray_png_categorical_is_lossless_and_tones_keep_default():
    ids = (_regions() * 7).astype(np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode.gray_png(ids, categorical=True))))
    np.testing.assert_array_equal(back, ids)
    tones = np.linspace(0, 1, 384 * 512, dtype=np.float32).reshape(384, 512)
    back = np.asarray(Image.open(io.BytesIO(encode.gray_png(tones))))
    np.testing.assert_array_equal(back, np.rint(tones * 255).astype(np.uint8))


def _photo_labels(name: str, classes: int) -> np.ndarray:
    """A label map made of a real photo: each pixel's class is its grey level in ``classes``
    bands, so the classes form the photo's own regions and edges."""
    from skimage import data

    grey = np.asarray(Image.fromarray(getattr(data, name)()).convert("L"), np.int64)
    return (grey * classes // 256).astype(np.int32)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
@pytest.mark.parametrize("classes", [2, 19, 150, 256])
def test_class_counts_equal_bincount_on_photo_label_maps(name, classes):
    """OpenCV's histogram (int32 or uint8 maps, below 2**24 pixels) gives np.bincount's counts,
    length included (at least ``minlength``, one past the largest class present)."""
    labels = _photo_labels(name, classes)
    for arr in (labels, labels.astype(np.uint8) if classes <= 256 else labels):
        for minlength in (0, classes, 300):
            got = encode.class_counts(arr, minlength)
            want = np.bincount(arr.reshape(-1), minlength=minlength)
            assert got.dtype == np.int64 and np.array_equal(got, want), (arr.dtype, minlength)


def test_class_counts_outside_the_histogram_fall_back_to_bincount():
    """Class ids over 255 (uint16 maps), maps of 2**24 pixels or more (float32 histogram counts
    would round), 1-D arrays and empty maps give np.bincount's answer too."""
    labels = _photo_labels("coffee", 19)
    wide = labels.astype(np.uint16) * 20  # ids up to 360
    big = np.zeros((4096, 4097), np.uint8)
    big[:7, :3] = 5
    for arr in (wide, big, labels.reshape(-1), np.zeros((0, 5), np.int32)):
        assert np.array_equal(encode.class_counts(arr, 19),
                              np.bincount(arr.reshape(-1), minlength=19))
    assert encode.class_counts(big)[0] == big.size - 21  # exact above float32's 2**24
