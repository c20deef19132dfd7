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


def _png(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", **kw)
    return buf.getvalue()


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
        "interlaced": _with_ihdr(data, interlace=1),
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
