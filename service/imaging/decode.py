"""Request bytes -> RGB uint8 pixels, with the gateway's limits (the ``decode`` step).

Rules (they are part of the API and the README documents them):

* Formats: JPEG (incl. multi-picture MPO), PNG, WebP, BMP, TIFF. Anything else is refused with
  415 naming the format when it can be recognised from its magic bytes (GIF, PDF, SVG, HEIC, ...).
* Limits, checked from the header *before* any pixel is decoded: body size (413), width * height
  (413) and the longest side (413), with the numbers in the message. Pillow's own decompression-bomb
  guard (``Image.MAX_IMAGE_PIXELS``) is a second line and also answers 413.
* EXIF orientation is applied (``ImageOps.exif_transpose``); the limits are symmetric so they hold
  before and after.
* Alpha (RGBA, LA, PA, palette transparency) is *dropped*, not composited: the colour stored under
  a transparent pixel is kept. This matches the official HRNet loaders (``PIL.Image.convert('RGB')``
  for faces, ``cv2.imread(IMREAD_COLOR)`` for segmentation), so a model sees what it saw at test.
* Grayscale and 1-bit images are replicated to three channels. 16-bit data (``I;16*`` and 16-bit
  ``I``) is scaled to 8 bits by ``>> 8`` (keeps the full range, no clipping); 32-bit integer TIFF
  by ``>> 24``; float TIFF in [0, 1] is multiplied by 255, otherwise clipped to 0..255.
* CMYK is converted to sRGB with the embedded ICC profile when there is one (LittleCMS), else with
  Pillow's plain CMYK->RGB formula. ICC profiles of RGB images are ignored (the official loaders
  ignore them too).
* Animated or multi-page files (WebP, TIFF, MPO): the first frame is used.
* Truncated or corrupt data of a supported format answers 400; an empty body 400. JPEG is decoded
  strictly (libjpeg-turbo through ``simplejpeg``, the same pixels as Pillow's decoder): any
  warning of the decoder (entropy data ending before the image does, as in a file whose header
  claims 8000x5000 over 41 KB of data; corrupt data; extraneous bytes) refuses the image. With
  ``settings.lenient_images`` such a JPEG is decoded anyway (missing parts grey, as libjpeg fills
  them) and :attr:`Decoded.warning` says so (the HTTP layer sends it as ``X-Image-Warning``).
  A PNG whose image data (complete, checksums right) holds fewer rows than its header claims is
  refused too, in every layout, interlaced or not: libpng and Pillow decode it with the missing
  rows black.
  Corruption of the pixel payload of a format that carries no check of it (uncompressed TIFF and
  BMP, the WebP bitstreams) cannot be told from a picture and decodes as one; broken structure
  (sizes, offsets, chunks, compressed streams, truncation) answers 400.
* Messages describe the data in the gateway's words; decoder exception texts (library and plugin
  names) are logged at debug level only.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Sequence

import cv2
import imagecodecs
import numpy as np
import simplejpeg
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.imaging import png_stored
from service.settings import Settings

# Pillow plugin names. Multi-picture JPEG (MPO) opens through the JPEG plugin.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF"

# Magic bytes of formats we refuse, so the 415 message can name them. Checked in order.
_FOREIGN_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"8BPS", "PSD"),
    (0, b"qoif", "QOI"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x00\x00\x02\x00", "CUR"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (4, b"jP  ", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"JXL ", "JPEG XL"),
    (0, b"PK\x03\x04", "ZIP"),
    (0, b"\x1f\x8b", "GZIP"),
    (0, b"DDS ", "DDS"),
    (0, b"icns", "ICNS"),
    (0, b"\x76\x2f\x31\x01", "OpenEXR"),
    (0, b"#?RADIANCE", "Radiance HDR"),
)
_FTYP_BRANDS = {
    b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
    b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
    b"isom": "MP4", b"mp41": "MP4", b"mp42": "MP4", b"qt  ": "QuickTime",
}


log = logging.getLogger("service.imaging.decode")

_DEFAULTS = Settings.model_construct()  # field defaults only; the environment is not read


def _limit(settings: Settings | None, name: str) -> int:
    """A decoding limit of ``settings`` (the defaults of :class:`Settings` when None)."""
    return int(getattr(settings if settings is not None else _DEFAULTS, name))


def _supported_signature(head: bytes) -> str | None:
    """Name a supported format from its magic bytes (to tell corrupt data from foreign data)."""
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def sniff_format(data: bytes) -> str | None:
    """Name the format of ``data`` from its first bytes, for formats the gateway refuses."""
    head = data[:64]
    for offset, magic, name in _FOREIGN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "ISO media (" + head[8:12].decode("latin-1") + ")")
    if re.match(rb"P[1-7]\s", head):
        return "PNM"
    text = head.lstrip().lower()
    if text.startswith((b"<?xml", b"<svg")):
        return "SVG/XML"
    if text.startswith((b"<!doctype", b"<html")):
        return "HTML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    return None


def check_body_size(size: int, settings: Settings | None = None) -> None:
    """413 when a request body of ``size`` bytes is over ``settings.max_body_bytes``."""
    limit = _limit(settings, "max_body_bytes")
    if size > limit:
        raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit} bytes")


def check_dimensions(width: int, height: int, settings: Settings | None = None) -> None:
    """413 when an image of ``width`` x ``height`` is over the pixel-count or side limit."""
    max_pixels = _limit(settings, "max_pixels")
    max_side = _limit(settings, "max_image_side")
    if width <= 0 or height <= 0:
        raise BadRequest(f"image has an empty size {width}x{height}", code="invalid_image")
    if max(width, height) > max_side:
        raise PayloadTooLarge(
            f"image is {width}x{height} pixels; the longest side may be at most {max_side}",
            code="image_too_large",
        )
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels",
            code="image_too_large",
        )


def image_pixels(data: bytes) -> int:
    """width * height from an image's header (0 when it cannot be read: the decode says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as im:
            return int(im.width) * int(im.height)
    except Exception:  # any unreadable header; decode() reports it with its proper status
        return 0


def check_request_pixels(images: Sequence[bytes], settings: Settings | None = None) -> None:
    """413 ``too_many_pixels`` when the images of one request have more than
    ``settings.max_request_pixels`` together (from their headers, before any is decoded)."""
    limit = _limit(settings, "max_request_pixels")
    total = sum(image_pixels(d) for d in images if d)
    if total > limit:
        raise PayloadTooLarge(f"the request's {len(images)} images have {total} pixels together; "
                              f"the limit is {limit} (max_request_pixels)", code="too_many_pixels")


def decode_base64(text: str, settings: Settings | None = None) -> bytes:
    """Decode a base64 image string from a JSON body.

    Accepts an optional data-URL prefix (``data:image/png;base64,``), whitespace and line breaks,
    missing ``=`` padding, and the URL-safe alphabet. Invalid base64 answers 400; a string whose
    decoded size would pass ``max_body_bytes`` answers 413 before decoding.
    """
    if not isinstance(text, str):
        raise BadRequest("'image' must be a base64 string", code="invalid_base64")
    s = text.strip()
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep:
            raise BadRequest("data URL without a ',' separator", code="invalid_base64")
        if not head.endswith(";base64"):
            raise BadRequest("data URL must be base64-encoded (';base64,')", code="invalid_base64")
    s = "".join(s.split())  # the whitespace of re's \s, 15x faster on megabytes of base64
    if not s:
        raise BadRequest("'image' is empty", code="empty_image")
    check_body_size(len(s) * 3 // 4, settings)
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"'image' is not valid base64: {exc}", code="invalid_base64") from None


@dataclass(frozen=True)
class Decoded:
    """A decoded image: ``pixels`` (``H x W x 3`` uint8 RGB) and, in lenient mode only, why
    the data was not clean (``warning``; None for clean data)."""

    pixels: np.ndarray
    warning: str | None = None


def decode_image(data: bytes, settings: Settings | None = None) -> np.ndarray:
    """Decode an encoded image into an ``H x W x 3`` C-contiguous ``uint8`` RGB array.

    ``settings`` supplies ``max_body_bytes``, ``max_pixels``, ``max_image_side`` and
    ``lenient_images`` (defaults when None). Raises :class:`~service.errors.ServiceError`
    subclasses (400/413/415); see the module docstring for the rules.
    """
    return decode(data, settings).pixels


def _bad_data(what: str, fmt: str, exc: BaseException) -> BadRequest | PayloadTooLarge:
    """The client's error for a decoder failure (the decoder's own text only in the log)."""
    text = str(exc)
    log.debug("%s %s image refused: %s: %s", what, fmt, type(exc).__name__, text)
    lowered = text.lower()
    if "too large" in lowered:  # PNG text chunks past Pillow's decompression limits
        return PayloadTooLarge(f"{fmt} image metadata is too large when decompressed",
                               code="image_too_large")
    if "truncated" in lowered or "premature end" in lowered:
        return BadRequest(f"truncated {fmt} image: the data ends early", code="invalid_image")
    return BadRequest(f"corrupt {fmt} image: the {what} cannot be decoded", code="invalid_image")


def _bomb(exc: BaseException) -> PayloadTooLarge:
    log.debug("decompression bomb refused: %s", exc)
    return PayloadTooLarge("image refused as a decompression bomb: too many pixels for its size",
                           code="image_too_large")


def decode(data: bytes, settings: Settings | None = None) -> Decoded:
    """:func:`decode_image` with the lenient mode's warning (see :class:`Decoded`)."""
    if not data:
        raise BadRequest("empty image: the request carried no image bytes", code="empty_image")
    check_body_size(len(data), settings)
    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    except UnidentifiedImageError:
        own = _supported_signature(data[:16])
        if own is not None:
            raise BadRequest(
                f"corrupt {own} image: the header cannot be parsed", code="invalid_image"
            ) from None
        name = sniff_format(data)
        if name is not None:
            raise UnsupportedMediaType(
                f"unsupported image format {name}; supported: {SUPPORTED_TEXT}", code="unsupported_format"
            ) from None
        raise UnsupportedMediaType(
            f"not a recognised image (supported formats: {SUPPORTED_TEXT})", code="unsupported_format"
        ) from None
    except Exception as exc:  # a supported signature whose header is broken
        raise _bad_data("header", _supported_signature(data[:16]) or "image", exc) from None
    warning = None
    with im:
        fmt = im.format or "image"
        # Our limits, from the header, before any pixel data is decoded.
        check_dimensions(im.width, im.height, settings)
        stored = _stored_png(data) if fmt == "PNG" else None
        fast = _fast_png(data, stored, im)
        if fast is not None:
            return Decoded(fast)
        if fmt in ("JPEG", "MPO"):
            strict, warning = _strict_jpeg(data, im, bool(getattr(settings, "lenient_images", False)))
            if strict is not None:
                return Decoded(strict)
        try:
            with warnings.catch_warnings():
                # Palette transparency warnings are expected: alpha is dropped on purpose.
                warnings.simplefilter("ignore", UserWarning)
                if stored is None:
                    rgb = _pillow_rgb(im, fmt)
                else:  # the same pixels, Pillow's zlib only copying (2048x1024 P: 0.5x the time)
                    with Image.open(io.BytesIO(stored), formats=("PNG",)) as copy:
                        rgb = _pillow_rgb(copy, fmt)
        except (PayloadTooLarge, BadRequest, UnsupportedMediaType):
            raise
        except Image.DecompressionBombError as exc:
            raise _bomb(exc) from None
        except Exception as exc:  # OSError, zlib errors, struct errors, SyntaxError from plugins
            raise _bad_data("data", fmt, exc) from None
    return Decoded(rgb, warning)


# JPEG colour layouts libjpeg-turbo turns into RGB exactly as Pillow does (YCbCr, RGB, grey).
_STRICT_JPEG_MODES = ("RGB", "L")
# Pillow's transpose for each EXIF orientation (ImageOps.exif_transpose's table).
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def _strict_jpeg(data: bytes, im: Image.Image, lenient: bool) -> tuple[np.ndarray | None, str | None]:
    """A JPEG decoded by libjpeg-turbo with every decoder warning an error.

    Returns ``(pixels, None)`` for a clean YCbCr/grey JPEG; ``(None, None)`` for a clean JPEG
    Pillow must convert (CMYK: checked here at 1/8 scale, decoded by Pillow); in lenient mode
    ``(None, warning)`` for data with recoverable faults (Pillow then decodes it as libjpeg
    fills it). Raises 400 otherwise.
    """
    plain = im.mode in _STRICT_JPEG_MODES
    try:
        if plain:
            pixels = simplejpeg.decode_jpeg(data, "RGB", strict=True)
        else:
            simplejpeg.decode_jpeg(data, "CMYK" if im.mode == "CMYK" else "RGB", strict=True,
                                   min_factor=8)
            return None, None
    except ValueError as exc:
        if lenient and not _jpeg_fatal(data):
            log.info("lenient decode of a faulty JPEG: %s", exc)
            return None, _jpeg_warning(exc)
        raise _bad_data("data", "JPEG", exc) from None
    if pixels.shape[:2] != (im.height, im.width):  # defensive: the headers must agree
        raise BadRequest("corrupt JPEG image: its frames disagree on the size", code="invalid_image")
    return _exif_oriented(pixels, im), None


def _jpeg_fatal(data: bytes) -> bool:
    """True when not even a non-strict decode gets through (lenient mode cannot help)."""
    try:
        simplejpeg.decode_jpeg(data, "RGB", strict=False, min_factor=8)
        return False
    except ValueError:
        return True


def _jpeg_warning(exc: BaseException) -> str:
    text = str(exc).lower()
    if "premature end" in text:
        return "JPEG data ends early: missing parts decoded as grey"
    return "corrupt JPEG data: decoded as far as possible"


def _exif_oriented(pixels: np.ndarray, im: Image.Image) -> np.ndarray:
    """``pixels`` turned upright by the EXIF orientation of ``im`` (what
    ``ImageOps.exif_transpose`` does to the Pillow image; unreadable EXIF is ignored)."""
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:
        return pixels
    method = _ORIENT.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return pixels
    turned = {
        Image.Transpose.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1],
        Image.Transpose.ROTATE_180: lambda a: a[::-1, ::-1],
        Image.Transpose.FLIP_TOP_BOTTOM: lambda a: a[::-1],
        Image.Transpose.TRANSPOSE: lambda a: a.transpose(1, 0, 2),
        Image.Transpose.ROTATE_270: lambda a: np.rot90(a, -1),
        Image.Transpose.TRANSVERSE: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        Image.Transpose.ROTATE_90: lambda a: np.rot90(a, 1),
    }[method](pixels)
    return np.ascontiguousarray(turned)


# PNG modes whose libpng decode (alpha dropped, grey replicated, 16 bits to their high byte)
# equals Pillow's conversion to RGB pixel for pixel. imagecodecs' libpng (zlib-ng) decodes a
# 2048x1024 photo PNG in 30 ms, OpenCV's in 44 ms, Pillow in 53-92 ms, each releasing the GIL.
# (libspng through pyspng took 28 ms holding the GIL: one decode at a time per process.)
_FAST_PNG_MODES = ("RGB", "RGBA", "L")


def _stored_png(data: bytes) -> bytearray | None:
    """The PNG ``data`` with its image data inflated by libdeflate and stored uncompressed
    (:mod:`~service.imaging.png_stored`; 0.64x the decode time of a 2048x1024 photo), or None
    to decode ``data`` itself. 400 when the data holds fewer rows than the header claims, which
    libpng and Pillow would fill black (index 0's colour in a palette image)."""
    try:
        return png_stored.restored(data)
    except png_stored.ShortImageData as exc:
        log.debug("PNG image refused: %s", exc)
        raise BadRequest("truncated PNG image: its data holds fewer rows than its header claims",
                         code="invalid_image") from None


def _fast_png(data: bytes, stored: bytearray | None, im: Image.Image) -> np.ndarray | None:
    """A plain PNG (``data``; ``stored``: its stored copy, decoded instead when there is one)
    decoded by libpng through imagecodecs (lossless, so Pillow's pixels), or None when Pillow's
    path is needed (other modes, interlacing, an EXIF orientation, data libpng refuses)."""
    if im.format != "PNG" or im.mode not in _FAST_PNG_MODES or getattr(im, "is_animated", False):
        return None
    # libpng decodes Adam7 right through imagecodecs but warns on stderr at every image.
    if im.info.get("interlace"):
        return None
    # EXIF (an eXIf chunk) may rotate the image: Pillow's path applies it. (Not im.getexif():
    # on a PNG it decodes the pixels, and would swallow a corrupt stream's error here.) Looked
    # for in the compressed file: the stored copy is 2-3x longer (+1.5 ms at 2048x1024).
    if b"eXIf" in data:
        return None
    try:
        px = imagecodecs.png_decode(data if stored is None else stored)
    except Exception:  # imagecodecs.PngError and kin: Pillow's path says what is wrong
        return None
    if px.dtype == np.uint16:  # Pillow reads 16-bit RGB(A) as its high bytes
        px = (px >> 8).astype(np.uint8)
    if px.ndim == 3 and px.shape[2] == 2:  # grey with a tRNS level expanded to alpha
        px = np.ascontiguousarray(px[..., 0])
    if px.ndim == 2:
        px = cv2.cvtColor(px, cv2.COLOR_GRAY2RGB)
    elif px.shape[2] == 4:  # RGBA, or RGB with a tRNS colour expanded to alpha: alpha dropped
        px = cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)
    if px.dtype != np.uint8 or px.shape != (im.height, im.width, 3):
        return None
    return px


def _pillow_rgb(im: Image.Image, fmt: str) -> np.ndarray:
    """The first frame of ``im`` decoded by Pillow, upright and as RGB uint8 (:func:`_to_rgb`)."""
    im.seek(0)
    im.load()
    return _to_rgb(_oriented(im), fmt)


def _oriented(im: Image.Image) -> Image.Image:
    """``im`` turned upright by its EXIF orientation; unreadable EXIF is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        return im


def _to_rgb(im: Image.Image, fmt: str) -> np.ndarray:
    """Convert any decoded Pillow mode to ``uint8`` RGB (rules in the module docstring)."""
    mode = im.mode
    if mode == "RGB":
        out = np.asarray(im)
    elif mode in ("L", "1", "P", "LA", "La", "RGBA", "RGBa", "RGBX", "YCbCr"):
        if mode == "P" and ("transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"):
            im = im.convert("RGBA")  # go through RGBA so transparency does not warn; alpha dropped
        out = np.asarray(im.convert("RGB"))
    elif mode == "PA":
        out = np.asarray(im.convert("RGBA").convert("RGB"))
    elif mode == "CMYK":
        out = np.asarray(_cmyk_to_rgb(im))
    elif mode.startswith("I;16"):
        a = np.asarray(im).astype(np.uint16)  # byte order handled by numpy's view of the mode
        out = np.repeat((a >> 8).astype(np.uint8)[..., None], 3, axis=2)
    elif mode == "I":
        bits = _tiff_bits(im) if fmt == "TIFF" else 16
        a = np.clip(np.asarray(im, dtype=np.int64), 0, (1 << bits) - 1)
        out = np.repeat((a >> (bits - 8)).astype(np.uint8)[..., None], 3, axis=2)
    elif mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        out = np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    else:
        try:
            out = np.asarray(im.convert("RGB"))
        except Exception:
            raise UnsupportedMediaType(
                f"unsupported pixel mode {mode} in {fmt} image", code="unsupported_format"
            ) from None
    if out.ndim != 3 or out.shape[2] != 3:  # defensive: every branch must give H x W x 3
        raise UnsupportedMediaType(f"unsupported pixel layout {out.shape} ({mode})", code="unsupported_format")
    return np.ascontiguousarray(out, dtype=np.uint8)


def _tiff_bits(im: Image.Image) -> int:
    """Bits per sample of a TIFF mode-'I' image (32 unless the tag says 16)."""
    tag = getattr(im, "tag_v2", None)
    bits = tag.get(258) if tag is not None else None
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return 16 if bits == 16 else 32


_SRGB = None


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK -> RGB with the embedded ICC profile when present (falls back to Pillow's formula)."""
    global _SRGB
    icc = im.info.get("icc_profile")
    if icc:
        try:
            if _SRGB is None:
                _SRGB = ImageCms.createProfile("sRGB")
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
        except Exception:  # a broken profile should not make the image unreadable
            pass
    return im.convert("RGB")
