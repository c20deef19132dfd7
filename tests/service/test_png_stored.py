"""service.imaging.png_stored: a PNG's IDAT inflated by libdeflate and stored uncompressed for
libpng. The pixels must be the original's exactly, on real photos in every layout the fast
decode takes, and anything unusual must fall back (None) rather than decode differently."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import imagecodecs
import numpy as np
import pytest
from PIL import Image

from service.errors import ServiceError
from service.imaging import png_stored
from service.imaging.decode import decode_image
from tests.helpers import photo


def _chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """Every chunk's (type, data, stored CRC)."""
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        out.append((kind, body, struct.unpack_from(">I", data, pos + 8 + n)[0]))
        pos += 12 + n
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _saved(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def _png(pixels: np.ndarray, **kw) -> bytes:
    return _saved(Image.fromarray(pixels), **kw)


def _layouts() -> list[tuple[str, bytes]]:
    """PNG files of scikit-image photos: 8-bit RGB, RGBA, grey, 2-bit grey, 16-bit RGB (OpenCV's
    encoder), RGB with tRNS, a compression level that makes one IDAT chunk and one of many."""
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        rgb = photo(name)
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        alpha = (np.arange(rgb.shape[1]) % 256).astype(np.uint8)[None].repeat(rgb.shape[0], 0)
        deep = rgb.astype(np.uint16) * 257
        out += [(f"{name} RGB", _png(rgb)), (f"{name} RGB level 1", _png(rgb, compress_level=1)),
                (f"{name} RGBA", _png(np.dstack([rgb, alpha]))), (f"{name} L", _png(grey)),
                (f"{name} L 2-bit", _png(grey >> 6 << 6, bits=2)),
                (f"{name} RGB tRNS", _png(rgb, transparency=tuple(int(v) for v in rgb[0, 0]))),
                (f"{name} RGB16", cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))[1].tobytes())]
    return out


@pytest.mark.parametrize("label,data", _layouts(), ids=lambda v: v if isinstance(v, str) else "")
def test_restored_png_decodes_to_the_same_pixels(label, data):
    new = png_stored.restored(data)
    assert new is not None, label
    new = bytes(new)
    np.testing.assert_array_equal(imagecodecs.png_decode(new), imagecodecs.png_decode(data))
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(new)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.info.keys() == b.info.keys()
    chunks, old = _chunks(new), _chunks(data)
    for kind, body, crc in chunks:  # every CRC right (libpng checks them)
        assert zlib.crc32(kind + body) == crc, kind
    idats = [body for kind, body, _ in chunks if kind == b"IDAT"]
    assert len(idats) == 1
    # One zlib stream of stored blocks (zlib checks the Adler-32) with the original's rows.
    rows = zlib.decompress(b"".join(b for k, b, _ in old if k == b"IDAT"))
    assert zlib.decompress(idats[0]) == rows
    assert len(idats[0]) == 2 + len(rows) + 5 * -(-len(rows) // 65535) + 4
    # The other chunks as they were, in their order.
    assert [c for c in chunks if c[0] != b"IDAT"] == [c for c in old if c[0] != b"IDAT"]


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_rows_filling_whole_stored_blocks(rows):
    """Image data of exactly 65535 bytes per block: the last full block is the final one."""
    grey = np.tile(np.arange(65534, dtype=np.uint64) * 7 % 251, (rows, 1)).astype(np.uint8)
    data = _png(grey)  # rows of 1 filter byte + 65534 pixels
    new = png_stored.restored(data)
    assert new is not None and len(new) < len(data) + rows * 65540 + 64
    np.testing.assert_array_equal(imagecodecs.png_decode(bytes(new)), grey)


def _with_ihdr(data: bytes, **fields: int) -> bytes:
    chunks = _chunks(data)
    names = ("width", "height", "depth", "colour", "compression", "filter", "interlace")
    values = dict(zip(names, struct.unpack(">IIBBBBB", chunks[0][1])), **fields)
    ihdr = struct.pack(">IIBBBBB", *(values[n] for n in names))
    return data[:8] + _chunk(b"IHDR", ihdr) + b"".join(_chunk(k, b) for k, b, _ in chunks[1:])


def test_unusual_pngs_fall_back():
    """None for what this path does not take: the caller then decodes the original bytes."""
    data = _png(photo("coffee")[:64, :80])
    chunks = _chunks(data)
    idat = b"".join(b for k, b, _ in chunks if k == b"IDAT")
    rebuilt = lambda *parts: data[:8] + b"".join(parts)  # noqa: E731
    ihdr = _chunk(b"IHDR", chunks[0][1])
    cases = {
        "not a PNG": b"GIF89a" + data[6:],
        "bad IDAT CRC": data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],
        "truncated": data[: len(data) - 30],
        "a chunk between IDATs": rebuilt(ihdr, _chunk(b"IDAT", idat[:100]), _chunk(b"tEXt", b"a\0b"),
                                         _chunk(b"IDAT", idat[100:]), _chunk(b"IEND", b"")),
        "more rows than the header": _with_ihdr(data, height=63),
        "not a zlib stream": rebuilt(ihdr, _chunk(b"IDAT", b"\xff" * 64), _chunk(b"IEND", b"")),
        "no IDAT": rebuilt(ihdr, _chunk(b"IEND", b"")),
    }
    for label, bad in cases.items():
        assert png_stored.restored(bad) is None, label
    with pytest.raises(png_stored.ShortImageData):
        png_stored.restored(_with_ihdr(data, height=65))  # a complete stream, one row short
    with pytest.raises(png_stored.ShortImageData):  # Adam7's passes need more row bytes
        png_stored.restored(_with_ihdr(data, interlace=1))


def test_broken_pngs_still_refused_with_400():
    """A bad IDAT CRC answers 400 as before (the original bytes go to libpng, then to Pillow,
    which say what is wrong), and so does a header that claims more rows than the data holds,
    which libpng and Pillow both decode with the missing rows black."""
    data = _png(photo("chelsea")[:96, :128])
    for bad in (data[:-20] + bytes([data[-20] ^ 1]) + data[-19:], _with_ihdr(data, height=97)):
        with pytest.raises(ServiceError) as info:
            decode_image(bad)
        assert info.value.status_code == 400 and "PNG" in info.value.message
    with pytest.raises(ServiceError) as info:
        decode_image(_with_ihdr(data, height=97))
    assert "fewer rows than its header" in info.value.message


def test_bytes_after_the_stream_and_the_size_cap(monkeypatch):
    """Bytes after the zlib stream inside the IDAT (libpng tolerates them) do not stand in for
    the Adler-32; images past MAX_ROW_BYTES keep libpng's own inflate."""
    data = _png(photo("astronaut")[:50, :70])
    chunks = _chunks(data)
    idat = b"".join(b for k, b, _ in chunks if k == b"IDAT") + b"\x00\x01\x02\x03\x04\x05"
    padded = data[:8] + _chunk(b"IHDR", chunks[0][1]) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    new = png_stored.restored(padded)
    assert new is not None
    np.testing.assert_array_equal(imagecodecs.png_decode(bytes(new)), imagecodecs.png_decode(data))
    monkeypatch.setattr(png_stored, "MAX_ROW_BYTES", 50 * (1 + 70 * 3) - 1)
    assert png_stored.restored(data) is None


# Adam7's passes: first column, first row, column step, row step (the PNG specification's table).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _interlaced(pixels: np.ndarray, colour: int, depth: int = 8, plte: bytes = b"") -> bytes:
    """An Adam7-interlaced PNG of ``pixels`` (HxW or HxWxC; uint8, uint16 for 16 bits, 0/1 for
    1 bit), rows unfiltered (neither Pillow nor OpenCV writes interlaced PNGs)."""
    h, w = pixels.shape[:2]
    raw = []
    for x0, y0, dx, dy in _ADAM7:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = sub.reshape(sub.shape[0], -1)
        if depth == 16:
            rows = rows.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1)
        elif depth == 1:
            rows = np.packbits(rows.astype(np.uint8), axis=1)
        raw.append(np.hstack([np.zeros((len(rows), 1), np.uint8), rows.astype(np.uint8)]).tobytes())
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + (_chunk(b"PLTE", plte) if plte else b"")
            + _chunk(b"IDAT", zlib.compress(b"".join(raw), 6)) + _chunk(b"IEND", b""))


def _pillow_layouts() -> list[tuple[str, bytes]]:
    """PNGs that take Pillow's path (palette, grey + alpha, 16-bit grey, interlaced) and the
    interlaced layouts, at sizes where some Adam7 passes are empty."""
    rgb = photo("coffee")[:120, :170]
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    plte = bytes(pal.getpalette()[: 3 * 256])
    out = [("P", _saved(pal)), ("P tRNS", _saved(pal, transparency=3)),
           ("P 4-bit", _saved(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE,
                                                           colors=16), bits=4)),
           ("LA", _saved(Image.fromarray(rgb).convert("LA"))),
           ("I;16", _saved(Image.fromarray(rgb[..., 1].astype(np.uint16) * 257)))]
    for h, w in ((120, 170), (1, 1), (3, 5), (7, 9), (9, 2)):
        px = np.ascontiguousarray(rgb[:h, :w])
        grey = px[..., 0]
        out += [(f"Adam7 RGB {h}x{w}", _interlaced(px, 2)),
                (f"Adam7 RGBA {h}x{w}", _interlaced(np.dstack([px, grey]), 6)),
                (f"Adam7 LA {h}x{w}", _interlaced(np.dstack([grey, px[..., 1]]), 4)),
                (f"Adam7 L 1-bit {h}x{w}", _interlaced(grey > 127, 0, depth=1)),
                (f"Adam7 RGB16 {h}x{w}", _interlaced(px.astype(np.uint16) * 257 + 3, 2, depth=16)),
                (f"Adam7 P {h}x{w}", _interlaced(np.asarray(pal)[:h, :w], 3, plte=plte))]
    return out


def _pillow_rgb(data: bytes) -> np.ndarray:
    """Pillow's pixels of the original bytes by the gateway's rules: alpha dropped, 16-bit grey
    to its high byte, replicated."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "I;16":
            return np.repeat((np.asarray(im) >> 8).astype(np.uint8)[..., None], 3, axis=2)
        return np.asarray(im.convert("RGBA").convert("RGB"))


@pytest.mark.parametrize("label,data", _pillow_layouts(), ids=lambda v: v if isinstance(v, str) else "")
def test_pillow_layouts_restored_and_decoded_as_before(label, data):
    """Every other layout is stored too: its rows are counted (Adam7's seven reduced images),
    Pillow decodes the stored copy to the original's pixels, and so does the gateway."""
    new = png_stored.restored(data)
    assert new is not None, label
    rows = zlib.decompress(b"".join(b for k, b, _ in _chunks(data) if k == b"IDAT"))
    assert zlib.decompress(b"".join(b for k, b, _ in _chunks(bytes(new)) if k == b"IDAT")) == rows
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(bytes(new))) as b:
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b)), label
    np.testing.assert_array_equal(decode_image(data), _pillow_rgb(data))


@pytest.mark.parametrize("label,data", _pillow_layouts(), ids=lambda v: v if isinstance(v, str) else "")
def test_short_image_data_refused_in_every_layout(label, data):
    """A header one row taller than the data: libpng and Pillow decode it with that row black
    (a palette image's: index 0's colour); the gateway answers 400, interlaced or not."""
    (height,) = struct.unpack_from(">I", data, 20)
    with pytest.raises(ServiceError) as info:
        decode_image(_with_ihdr(data, height=height + 1))
    assert info.value.status_code == 400 and "fewer rows than its header" in info.value.message


def test_rows_past_the_cap_are_counted_not_stored(monkeypatch):
    """Past MAX_ROW_BYTES the original bytes are decoded (no stored copy held beside the rows),
    but a stream short of the header's rows is still refused."""
    data = _png(photo("astronaut")[:60, :90])
    monkeypatch.setattr(png_stored, "MAX_ROW_BYTES", 100)
    assert png_stored.restored(data) is None
    np.testing.assert_array_equal(decode_image(data), photo("astronaut")[:60, :90])
    with pytest.raises(png_stored.ShortImageData):
        png_stored.restored(_with_ihdr(data, height=61))
    with pytest.raises(ServiceError) as info:
        decode_image(_with_ihdr(data, height=61))
    assert info.value.status_code == 400
