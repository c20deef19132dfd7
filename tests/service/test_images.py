"""Image decoding: formats, modes, EXIF, limits and broken data (service/images.py)."""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from service.errors import ServiceError
from service.imaging.decode import decode_base64, decode_image
from service.settings import Settings

RNG = np.random.default_rng(1234)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def expect_error(data: bytes, status: int, *words: str, settings=None) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        decode_image(data, settings)
    err = info.value
    assert err.status_code == status, err.message
    for w in words:
        assert w.lower() in err.message.lower(), err.message
    return err


@pytest.mark.parametrize(
    "fmt,kw", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"lossless": True})]
)
def test_lossless_formats_roundtrip(fmt, kw):
    out = decode_image(encode(Image.fromarray(RGB), fmt, **kw))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_close_to_source():
    smooth = np.zeros((40, 60, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 60, dtype=np.uint8)[None]
    smooth[..., 1] = 128
    out = decode_image(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert out.shape == (40, 60, 3)
    assert np.abs(out.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("orientation,expected", [(1, "id"), (3, "rot180"), (6, "rot270"), (8, "rot90"), (2, "fliplr")])
def test_exif_orientation_applied(orientation, expected):
    src = np.zeros((20, 40, 3), np.uint8)
    src[:10, :10] = 255  # white block at the top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(Image.fromarray(src), "PNG", exif=exif))
    want = {
        "id": src,
        "rot180": np.rot90(src, 2),
        "rot270": np.rot90(src, -1),  # orientation 6: rotate 90 degrees clockwise to display
        "rot90": np.rot90(src, 1),
        "fliplr": src[:, ::-1],
    }[expected]
    np.testing.assert_array_equal(out, want)


def test_exif_rotated_jpeg_swaps_sides():
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(Image.fromarray(np.full((20, 50, 3), 200, np.uint8)), "JPEG", exif=exif))
    assert out.shape == (50, 20, 3)


def test_grayscale_and_one_bit():
    gray = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(gray), "PNG"))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    bits = Image.fromarray(gray > 127).convert("1")
    out = decode_image(encode(bits, "PNG"))
    np.testing.assert_array_equal(out[..., 0], np.where(gray > 127, 255, 0))


def test_sixteen_bit_png_scaled_by_shift():
    a = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # up to 65535
    out = decode_image(encode(Image.fromarray(a), "PNG"))
    np.testing.assert_array_equal(out[..., 1], (a >> 8).astype(np.uint8))
    assert out.max() == 255 and out.min() == 0


def test_sixteen_bit_tiff_big_endian_and_32_bit():
    a = np.array([[0, 256, 65535], [1000, 30000, 50000]], np.uint16)
    im = Image.frombytes("I;16B", (3, 2), a.astype(">u2").tobytes())
    out = decode_image(encode(im, "TIFF"))
    np.testing.assert_array_equal(out[..., 0], (a >> 8).astype(np.uint8))
    i32 = np.array([[0, 1 << 24, (1 << 31) - 1]], np.int32)
    out = decode_image(encode(Image.fromarray(i32), "TIFF"))
    np.testing.assert_array_equal(out[0, :, 2], [0, 1, 127])


def test_float_tiff_unit_range():
    f = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = decode_image(encode(Image.fromarray(f), "TIFF"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


def test_palette_with_transparency_drops_alpha():
    p = Image.new("P", (4, 2))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    p.info["transparency"] = 0
    out = decode_image(encode(p, "PNG", transparency=0))
    assert tuple(out[0, 0]) == (10, 20, 30)  # colour under the transparent index is kept
    assert tuple(out[0, 1]) == (200, 100, 50)


def test_rgba_and_la_drop_alpha():
    rgba = np.dstack([RGB, np.zeros((24, 32), np.uint8)])  # fully transparent
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(rgba), "PNG")), RGB)
    la = Image.fromarray(np.dstack([RGB[..., 0], RGB[..., 1]]), "LA")
    out = decode_image(encode(la, "PNG"))
    np.testing.assert_array_equal(out[..., 2], RGB[..., 0])
    webp = decode_image(encode(Image.fromarray(np.dstack([RGB, np.full((24, 32), 255, np.uint8)])), "WEBP", lossless=True))
    np.testing.assert_array_equal(webp, RGB)


def test_cmyk_jpeg_plain_and_with_icc():
    solid = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in naive CMYK
    out = decode_image(encode(solid, "JPEG", quality=100))
    assert out.shape == (16, 16, 3)
    r, g, b = out[8, 8].astype(int)
    assert r > 200 and g < 40 and b < 40
    # With an ICC profile the conversion goes through LittleCMS (any valid profile will do here).
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray = Image.new("CMYK", (8, 8), (0, 0, 0, 0))  # paper white
    out = decode_image(encode(gray, "TIFF", icc_profile=icc))
    assert out.shape == (8, 8, 3) and out.min() > 200


def test_animated_webp_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=50)
    out = decode_image(buf.getvalue())
    assert tuple(out[4, 4]) == (255, 0, 0)


def test_multipage_tiff_first_page():
    pages = [Image.new("RGB", (6, 6), c) for c in ((0, 255, 0), (255, 255, 255))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    assert tuple(decode_image(buf.getvalue())[0, 0]) == (0, 255, 0)


def test_empty_and_not_an_image():
    expect_error(b"", 400, "empty")
    expect_error(b"this is plain text, not an image", 415, "not a recognised image")


@pytest.mark.parametrize(
    "data,name",
    [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
    ],
)
def test_foreign_formats_named(data, name):
    expect_error(data, 415, name, "supported")


def test_real_gif_refused():
    expect_error(encode(Image.new("P", (4, 4)), "GIF"), 415, "GIF")


def test_truncated_and_corrupt():
    jpeg = encode(Image.fromarray(RGB), "JPEG")
    expect_error(jpeg[: len(jpeg) // 2], 400, "truncated", "JPEG")
    png = encode(Image.fromarray(RGB), "PNG")
    expect_error(png[:40], 400, "PNG")
    expect_error(png[:8] + b"garbage" * 10, 400, "PNG")
    # A PNG whose IDAT holds bytes that are not zlib data.
    bad = bytearray(png)
    i = bad.find(b"IDAT") + 4
    bad[i : i + 16] = b"\xff" * 16
    expect_error(bytes(bad), 400, "PNG")


def test_body_size_limit():
    data = encode(Image.fromarray(RGB), "PNG")
    expect_error(data, 413, str(len(data)), settings=Settings(max_body_bytes=len(data) - 1))


def test_pixel_and_side_limits_from_header():
    data = encode(Image.new("L", (300, 200)), "PNG")
    expect_error(data, 413, "300x200", "60000", settings=Settings(max_pixels=59_999))
    expect_error(data, 413, "300x200", "longest side", settings=Settings(max_image_side=299))
    assert decode_image(data, Settings(max_pixels=60_000, max_image_side=300)).shape == (200, 300, 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width x height`` and a tiny IDAT: a decompression bomb's
    header (the decoder must refuse it before inflating anything)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_header_refused():
    # 100000 x 100000 = 1e10 pixels: past our limit and Pillow's bomb guard alike.
    expect_error(png_header_only(100_000, 100_000), 413, "pixels")
    # Under Pillow's guard but over ours: our check from the header answers.
    expect_error(png_header_only(8000, 6000), 413, "48000000", settings=Settings(max_image_side=10000))


def test_base64_forms():
    data = encode(Image.fromarray(RGB), "PNG")
    text = base64.b64encode(data).decode()
    assert decode_base64(text) == data
    assert decode_base64("data:image/png;base64," + text) == data
    assert decode_base64(text.rstrip("=") + "\n") == data  # padding optional, whitespace ignored
    assert decode_base64(base64.urlsafe_b64encode(data).decode()) == data
    with pytest.raises(ServiceError) as info:
        decode_base64("not base64 at all!!")
    assert info.value.status_code == 400 and "base64" in info.value.message
    with pytest.raises(ServiceError) as info:
        decode_base64("data:image/png,abc")
    assert info.value.status_code == 400
    with pytest.raises(ServiceError) as info:
        decode_base64("QUJD" * 100, Settings(max_body_bytes=100))
    assert info.value.status_code == 413


def _png_variant(photo: np.ndarray, variant: str) -> bytes:
    """``photo`` saved as a PNG of one layout (Pillow's encoder; OpenCV's for 16-bit colour)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    im, extra = Image.fromarray(photo), {}
    grey = np.asarray(im.convert("L"))
    if variant in ("RGB16", "RGBA16"):
        rng = np.random.default_rng(0)  # low bytes that must not leak into the 8-bit pixels
        deep = photo.astype(np.uint16) * 256 + rng.integers(0, 256, photo.shape, dtype=np.uint16)
        if variant == "RGBA16":
            deep = np.dstack([deep, np.full(photo.shape[:2], 40000, np.uint16)])
            return cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGBA2BGRA))[1].tobytes()
        return cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))[1].tobytes()
    if variant == "RGBA":
        alpha = (np.arange(photo.shape[1]) % 256).astype(np.uint8)[None].repeat(photo.shape[0], 0)
        im = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    elif variant == "I;16":
        im = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)
    elif variant == "RGB tRNS":
        extra = {"transparency": tuple(int(v) for v in photo[0, 0])}
    elif variant == "L tRNS":
        im, extra = Image.fromarray(grey), {"transparency": int(grey[0, 0])}
    elif variant in ("L 2-bit", "L 4-bit"):
        bits = int(variant[2])
        im, extra = Image.fromarray((grey >> (8 - bits) << (8 - bits)).astype(np.uint8)), {"bits": bits}
    elif variant != "RGB" and variant != "RGB gAMA":
        im = im.convert(variant)
    buf = io.BytesIO()
    im.save(buf, "PNG", **extra)
    data_ = buf.getvalue()
    if variant == "RGB gAMA":  # a gamma of 1/2.2 that neither decoder may apply
        data_ = data_[:33] + chunk(b"gAMA", struct.pack(">I", 45455)) + data_[33:]
    return data_


_PNG_VARIANTS = ["RGB", "RGBA", "L", "RGB16", "RGBA16", "RGB tRNS", "L tRNS", "L 2-bit",
                 "L 4-bit", "RGB gAMA", "P", "LA", "I;16"]


@pytest.mark.parametrize("variant", _PNG_VARIANTS)
def test_fast_png_decode_equals_pillow_and_opencv_on_real_photos(variant):
    """The fast PNG path (libpng through imagecodecs) gives Pillow's pixels exactly, and the
    pixels of the OpenCV decode it replaced; layouts it does not take fall back to Pillow."""
    from skimage import data

    from service.imaging import decode as dec

    for photo in (data.astronaut(), data.coffee(), data.chelsea()):
        data_ = _png_variant(photo, variant)
        with Image.open(io.BytesIO(data_)) as opened:
            fast = dec._fast_png(data_, dec._stored_png(data_), opened)
            assert (fast is not None) == (opened.mode in dec._FAST_PNG_MODES), variant
            plain = dec._fast_png(data_, None, opened)  # libpng inflating the original bytes
            assert (plain is None) == (fast is None) and (fast is None or np.array_equal(fast, plain))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opened.load()
                ref = dec._to_rgb(opened, "PNG")
        got = decode_image(data_)
        assert np.array_equal(got, ref), variant
        if fast is not None:
            assert np.array_equal(fast, ref), variant
            assert np.array_equal(fast, cv2.imdecode(np.frombuffer(data_, np.uint8),
                                                     cv2.IMREAD_COLOR_RGB)), variant


# -- strict JPEG decoding (libjpeg-turbo via simplejpeg) --------------------------------------

def _photo_rgb(w: int = 160, h: int = 120) -> np.ndarray:
    from tests.helpers import photo

    return np.asarray(Image.fromarray(photo("coffee")).resize((w, h)))


@pytest.mark.parametrize("params", [
    dict(quality=90), dict(quality=75, subsampling=0), dict(quality=75, subsampling=1),
    dict(progressive=True), dict(quality=95, optimize=True), dict(gray=True),
], ids=["420", "444", "422", "progressive", "optimized", "grey"])
def test_strict_jpeg_decoder_gives_pillows_pixels(params):
    im = Image.fromarray(_photo_rgb(161, 97))  # odd sizes: partial MCUs
    if params.pop("gray", False):
        im = im.convert("L")
    data = encode(im, "JPEG", **params)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_strict_jpeg_applies_every_exif_orientation_as_pillow(orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(_photo_rgb(40, 30)), "JPEG", exif=exif, quality=92)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data), expected)


def _claiming(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    i = 2
    while i < len(out):
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise AssertionError("no SOF")


def test_lying_and_truncated_jpegs_are_refused_quickly():
    import time

    data = encode(Image.fromarray(_photo_rgb(320, 240)), "JPEG", quality=90)
    for bad in (_claiming(data, 8000, 5000), _claiming(data, 640, 480),
                data[: len(data) // 2] + b"\xff\xd9", data[: len(data) * 9 // 10]):
        t0 = time.monotonic()
        err = expect_error(bad, 400, "truncated", "JPEG")
        assert time.monotonic() - t0 < 1.5
        assert err.code == "invalid_image"
    cmyk = encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG")
    expect_error(cmyk[: len(cmyk) // 2] + b"\xff\xd9", 400, "JPEG")  # checked before Pillow's path
    assert decode_image(data + b"trailing bytes after EOI").shape == (240, 320, 3)


def test_lenient_decode_reports_the_fault():
    from service.imaging.decode import decode

    data = encode(Image.fromarray(_photo_rgb(320, 240)), "JPEG", quality=90)
    bad = data[: len(data) // 2] + b"\xff\xd9"
    result = decode(bad, Settings(lenient_images=True))
    assert result.pixels.shape == (240, 320, 3) and "ends early" in result.warning
    assert decode(data, Settings(lenient_images=True)).warning is None
    with pytest.raises(ServiceError):  # what not even a lenient decoder reads stays refused
        decode(b"\xff\xd8\xff\xdb" + b"\0" * 10, Settings(lenient_images=True))
