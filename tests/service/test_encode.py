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
    return len(_chunks(png)[b"IDAT"])


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


def _chunks(png: bytes) -> dict[bytes, bytes]:
    """The PNG's chunks by type (IDATs joined), each chunk's CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, {}
    while pos < len(png):
        n = int.from_bytes(png[pos : pos + 4], "big")
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]
        assert int.from_bytes(png[pos + 8 + n : pos + 12 + n], "big") == zlib.crc32(kind + data)
        out[kind] = out.get(kind, b"") + data
        pos += 12 + n
    return out


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
@pytest.mark.parametrize("pieces", [1, 2, 3, 7])
def test_unfiltered_png_equals_pillows_on_photo_label_maps(monkeypatch, name, pieces):
    """The label-map PNG written in deflate pieces decodes, by Pillow and by OpenCV, to the same
    indices and palette as Pillow's own encoding of the map; its zlib stream (Adler-32
    included, which Pillow does not check) is exactly the unfiltered rows."""
    import cv2

    monkeypatch.setattr(encode, "workers", lambda: pieces)
    monkeypatch.setattr(encode, "_PIECE_BYTES", 1)
    labels = _photo_labels(name, 19)[: 300 + pieces]  # odd heights: uneven pieces
    palette = [(10 * i, 255 - 5 * i, (37 * i) % 256) for i in range(19)]
    ours = encode.label_png(labels, palette)
    im = Image.fromarray(labels.astype(np.uint8), "P")
    im.putpalette(full_palette(palette).reshape(-1).tolist())
    pillow = encode.png_bytes(im, strategy=encode.Z_RLE)
    a, b = Image.open(io.BytesIO(ours)), Image.open(io.BytesIO(pillow))
    assert a.mode == b.mode == "P" and a.getpalette() == b.getpalette()
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(a), labels)
    bgr = cv2.imdecode(np.frombuffer(ours, np.uint8), cv2.IMREAD_COLOR)  # the palette applied
    assert np.array_equal(bgr, full_palette(palette)[labels][..., ::-1])
    raw = zlib.decompress(_chunks(ours)[b"IDAT"])
    rows = np.frombuffer(raw, np.uint8).reshape(labels.shape[0], labels.shape[1] + 1)
    assert not rows[:, 0].any() and np.array_equal(rows[:, 1:], labels)


def test_categorical_gray_png_is_unfiltered_grayscale():
    ids = (_photo_labels("coffee", 19) * 7).astype(np.uint8)
    png = encode.gray_png(ids, categorical=True)
    im = Image.open(io.BytesIO(png))
    assert im.mode == "L" and np.array_equal(np.asarray(im), ids)
    assert b"PLTE" not in _chunks(png)


def test_adler32_combine_equals_zlib():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 200_003, dtype=np.uint8).tobytes() + b"\xff" * 70_000
    for cut in (0, 1, 5552, 65521, 100_000, len(data) - 1, len(data)):
        a, b = data[:cut], data[cut:]
        assert encode._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(data)
