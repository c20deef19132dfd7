"""A PNG's image data inflated by libdeflate and handed to libpng stored, not compressed.

libpng inflates a PNG's IDAT stream with zlib, which took 23 of the 30 ms of a 2048x1024 photo's
decode here; libdeflate inflates the same stream in 7.6 ms but cannot unfilter rows. So the stream
is inflated by libdeflate (``imagecodecs.deflate_decode``, which checks its Adler-32) and written
back as one IDAT chunk of *stored* deflate blocks, with the original Adler-32 and a fresh CRC;
libpng then only copies the rows and unfilters them. The pixels are the very same (lossless both
ways), for every PNG layout, interlaced ones (Adam7) included, and through Pillow too (whose
zlib then also only copies). Anything unusual (chunks between IDATs, a bad CRC or stream)
returns None, and the caller decodes the original bytes as before.

Image data that ends before the rows the header claims raises :class:`ShortImageData`: libpng
and Pillow both decode such a file without complaint, the missing rows black (palette images:
the colour of index 0), so a cut-off upload would be segmented as a picture.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import imagecodecs
import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# A stored deflate block holds at most 65535 bytes after its 5-byte header.
_BLOCK = 65535
# zlib header: deflate with a 32 KiB window, no dictionary, check bits that make it divisible by 31.
_ZLIB_HEADER = b"\x78\x01"
# Largest image data (filtered rows) taken this way: the rows and the stored copy are held beside
# the decoded pixels, 3x the pixels' memory, so larger images (past 64 MiB: ~22 MP of RGB) keep
# libpng's own inflate; their rows are inflated once only to be counted, then dropped.
MAX_ROW_BYTES = 64 << 20
# Adam7's seven passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


class ShortImageData(ValueError):
    """A complete image data stream that holds fewer rows than the PNG's header claims."""


class _Span(NamedTuple):
    """Where a PNG's image data lies, with the header fields that size its rows."""

    width: int
    height: int
    depth: int  # bits per sample
    colour: int  # PNG colour type
    first: int  # offset of the first IDAT chunk
    end: int  # end of the last IDAT chunk
    idats: list[tuple[int, int]]  # each IDAT's (data offset, length)
    interlaced: bool  # Adam7

    def row_bytes(self) -> int:
        """Bytes of filtered rows the header calls for (each row: a filter byte, then its
        pixels; an interlaced image's seven reduced images one after the other)."""
        bits = _CHANNELS[self.colour] * self.depth

        def rows(width: int, height: int) -> int:
            return height * (1 + (width * bits + 7) // 8) if width and height else 0

        if not self.interlaced:
            return rows(self.width, self.height)
        return sum(rows(max(0, -(-(self.width - x0) // dx)), max(0, -(-(self.height - y0) // dy)))
                   for x0, y0, dx, dy in _ADAM7)


def _idat_span(data: bytes) -> _Span | None:
    """The image data's :class:`_Span`; None for anything but consecutive IDATs with intact
    CRCs and a valid header."""
    if not data.startswith(_SIGNATURE):
        return None
    view = memoryview(data)
    pos, ihdr, idats, first, end = 8, None, [], -1, -1
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if stop > len(data):
            return None
        if kind == b"IHDR" and length == 13:
            ihdr = struct.unpack_from(">IIBBBBB", data, pos + 8)
        elif kind == b"IDAT":
            if idats and end != pos:  # another chunk between two IDATs: not for this path
                return None
            (crc,) = struct.unpack_from(">I", data, stop - 4)
            if imagecodecs.deflate_crc32(view[pos + 4 : stop - 4]) != crc:
                return None  # libpng and Pillow refuse a bad CRC: so does the fallback
            first = pos if first < 0 else first
            idats.append((pos + 8, length))
            end = stop
        elif kind == b"IEND":
            break
        pos = stop
    if ihdr is None or not idats:
        return None
    width, height, depth, colour, _, _, interlace = ihdr
    if interlace not in (0, 1) or colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        return None
    return _Span(width, height, depth, colour, first, end, idats, bool(interlace))


def restored(data: bytes) -> bytearray | None:
    """``data`` (a PNG) with its IDAT stream inflated and stored uncompressed, or None (see the
    module's docstring, and for image data past :data:`MAX_ROW_BYTES`); decoding either gives
    the same pixels. Raises :class:`ShortImageData` when the stream ends before the rows do, at
    any size. Call it once the header's size has passed the gateway's limits: the rows it
    calls for are inflated into memory."""
    span = _idat_span(data)
    if span is None:
        return None
    first, end, idats = span.first, span.end, span.idats
    raw_size = span.row_bytes()
    view = memoryview(data)
    stream = b"".join(view[a : a + n] for a, n in idats)
    if len(stream) < 6:
        return None
    try:
        raw = imagecodecs.deflate_decode(stream, out=raw_size)
    except Exception:  # imagecodecs.DeflateError: a broken stream, or more data than the rows
        return None
    if len(raw) != raw_size:
        raise ShortImageData(f"image data for {len(raw)} of the header's {raw_size} bytes of rows")
    if raw_size > MAX_ROW_BYTES:
        return None  # counted; libpng inflates it again without the stored copy beside it
    full, rest = divmod(raw_size, _BLOCK)
    blocks = full + (1 if rest else 0)
    body = len(_ZLIB_HEADER) + raw_size + 5 * blocks + 4  # header, blocks, Adler-32
    out = bytearray(first + 8 + body + 4 + len(data) - end)
    out[:first] = view[:first]
    struct.pack_into(">I4s", out, first, body, b"IDAT")
    p = first + 8
    out[p : p + 2] = _ZLIB_HEADER
    p += 2
    buf, src = np.frombuffer(out, np.uint8), np.frombuffer(raw, np.uint8)
    if full:
        grid = buf[p : p + full * (_BLOCK + 5)].reshape(full, _BLOCK + 5)
        grid[:, 1:5] = (0xFF, 0xFF, 0, 0)  # LEN 65535, NLEN its complement (little-endian)
        grid[:, 0] = 0  # BTYPE 00 (stored), not final
        grid[:, 5:] = src[: full * _BLOCK].reshape(full, _BLOCK)
        p += full * (_BLOCK + 5)
    if rest:
        struct.pack_into("<BHH", out, p, 1, rest, rest ^ 0xFFFF)
        buf[p + 5 : p + 5 + rest] = src[full * _BLOCK :]
        p += 5 + rest
    else:
        out[p - (_BLOCK + 5)] = 1  # the last full block is the final one
    # The rows' Adler-32 computed again (0.2 ms for 6 MB), not copied from the stream's end:
    # bytes after the zlib stream (libpng tolerates them) would otherwise stand in for it.
    struct.pack_into(">I", out, p, imagecodecs.deflate_adler32(raw))
    p += 4
    struct.pack_into(">I", out, p, imagecodecs.deflate_crc32(memoryview(out)[first + 4 : p]))
    out[p + 4 :] = view[end:]
    return out
