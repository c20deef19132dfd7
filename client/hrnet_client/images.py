"""Image inputs -> (file name, bytes, media type), and the PNG codec the client needs without
Pillow (8-bit grayscale / RGB encoding; 8-bit palette and grayscale, 16-bit grayscale decoding of
unfiltered or filtered rows)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Union

import numpy as np

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]
"""A path, file bytes, an open binary file, a uint8 array (H x W or H x W x 3/4) or a PIL image."""

_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
]


def media_type(data: bytes) -> str:
    """The image media type sniffed from the file's first bytes (``image/*`` when unknown:
    the gateway sniffs again and answers 415 for what it cannot read)."""
    for sig, media in _SIGNATURES:
        if data.startswith(sig):
            return media
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 ``H x W`` (gray), ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA) array as PNG bytes
    (no filtering, zlib level 6): lossless, and no Pillow needed."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, not {a.dtype}")
    if a.ndim == 2:
        colour = 0
        a = a[:, :, None]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        colour = 2 if a.shape[2] == 3 else 6
    else:
        raise ValueError(f"image arrays must be H x W, H x W x 3 or H x W x 4, not {a.shape}")
    h, w = a.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(a).reshape(h, -1)], 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """PNG's five row filters undone (``rows``: ``H x (1 + stride)`` uint8, filter byte first)."""
    out = np.zeros((rows.shape[0], rows.shape[1] - 1), np.uint8)
    prev = np.zeros(rows.shape[1] - 1, np.int32)
    for y in range(rows.shape[0]):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:  # Sub, Average, Paeth depend on the pixel to the left: one pass along the row
            cur = line.copy()
            for x in range(len(cur)):
                left = cur[x - bpp] if x >= bpp else 0
                up = prev[x]
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) >> 1
                else:
                    ul = prev[x - bpp] if x >= bpp else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                cur[x] = (cur[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def decode_png(data: bytes) -> np.ndarray:
    """The pixel values of a gateway PNG: 8-bit palette or grayscale -> ``H x W`` uint8 (palette
    *indices*: label maps), 16-bit grayscale -> uint16, 8-bit RGB -> ``H x W x 3``. Non-interlaced
    only (what the gateway writes). Pillow, when installed, does it faster."""
    try:
        from PIL import Image  # noqa: PLC0415 - optional

        with Image.open(io.BytesIO(data)) as im:
            return np.array(im)
    except ImportError:
        pass
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1}.get(colour)
    if channels is None or depth not in (8, 16) or interlace or (colour == 3 and depth != 8):
        raise ValueError(f"unsupported PNG (colour type {colour}, depth {depth}); install Pillow")
    bpp = channels * depth // 8
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * bpp)
    pixels = _unfilter(rows, bpp)
    if depth == 16:
        return pixels.view(">u2").reshape(h, w).astype(np.uint16)
    return pixels.reshape(h, w, channels) if channels == 3 else pixels.reshape(h, w)


def image_file(image: ImageInput) -> tuple[str, bytes, str]:
    """``(file name, bytes, media type)`` of any accepted image input."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes()
        return path.name, data, media_type(data)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return "image", data, media_type(data)
    if isinstance(image, np.ndarray):
        return "image.png", encode_png(image), "image/png"
    if hasattr(image, "read"):  # an open binary file
        data = image.read()
        name = Path(getattr(image, "name", "image")).name
        return name, data, media_type(data)
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buf = io.BytesIO()
        im = image if image.mode in ("RGB", "L", "RGBA") else image.convert("RGB")
        im.save(buf, format="PNG")
        return "image.png", buf.getvalue(), "image/png"
    raise TypeError(f"cannot send a {type(image).__name__} as an image: give a path, bytes, a "
                    "binary file, a uint8 NumPy array or a PIL image")
