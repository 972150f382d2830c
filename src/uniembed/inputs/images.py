"""Decode images safely into RGB PIL images, from bytes, base64, data URIs, URLs or paths.

Sizes are checked in this order, each before the costlier step: encoded bytes, then width × height
read from the header, and only then are pixels decoded. :func:`read_image_header` also tells what
the decode will allocate (:func:`decode_transient_bytes`), so a request's budget can be charged
with the real cost of 16-bit, float and transparent images before any of them is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from uniembed.errors import InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.limits import InputLimits

ImageSource = Image.Image | bytes | bytearray | memoryview | str | os.PathLike[str]

# Errors Pillow raises for corrupt or truncated data (it has no single base class for them).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)
URL_SCHEMES = ("http://", "https://")
EXIF_ORIENTATION = 0x0112
_BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(r"\s+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# A path longer than this cannot be opened on common systems, so the string is not a path.
MAX_PATH_CHARS = 4096
# Pillow holds an RGB pixel in 4 bytes (RGBX): what every decoded image or page costs while it is
# kept. Modes not listed below take 4 bytes a pixel too.
RGB_BYTES = 4
SOURCE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# 16-bit and float images are scaled to 8 bits this many rows at a time, never as one float64
# copy of the whole image (8 bytes a pixel). A block holds its crop (at most 4 bytes a pixel), one
# float64 array scaled in place (8) and its 8-bit result (1): counted as BLOCK_BYTES a block pixel.
HIGH_DEPTH_BLOCK_ROWS = 64
BLOCK_BYTES = 16


# --------------------------------------------------------------------- bytes → image
def decode_image(
    data: bytes, limits: InputLimits | None = None, source: str = "image"
) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, WebP, GIF, TIFF, BMP, …) to an RGB image.

    EXIF orientation is applied; alpha is composited on white; only the first frame of an
    animation is used. Errors name ``source``.

    >>> buf = io.BytesIO(); Image.new("LA", (3, 2), (0, 0)).save(buf, "PNG")
    >>> decode_image(buf.getvalue()).getpixel((0, 0))  # fully transparent → white
    (255, 255, 255)
    """
    image = _open_checked(data, limits or InputLimits(), source)
    try:
        image.load()
        if exif_orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise InputTooLarge(f"{source}: image dimensions exceed the pixel limit ({exc})") from exc
    except DECODE_ERRORS as exc:
        raise InvalidInput(f"{source}: the image data is corrupt or truncated ({exc})") from exc


def read_image_header(
    data: bytes, limits: InputLimits | None = None, source: str = "image"
) -> tuple[int, int, int]:
    """Width, height and :func:`decode_transient_bytes` from the image header, checked like
    :func:`decode_image` checks them; no pixel is decoded (a budget can be charged first).

    >>> buf = io.BytesIO(); Image.new("I;16", (700, 3), 0).save(buf, "PNG")
    >>> read_image_header(buf.getvalue())
    (700, 3, 723100)
    """
    image = _open_checked(data, limits or InputLimits(), source)
    transposed = _header_orientation(image) != 1
    return image.width, image.height, decode_transient_bytes(image, transposed=transposed)


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation as far as the header tells, never decoding: Pillow would decode a PNG
    without EXIF before its pixels to look after them, where the PNG spec (1.5) allows none."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return exif_orientation(image)


def decode_transient_bytes(image: Image.Image, *, transposed: bool = False) -> int:
    """Bytes :func:`decode_image` holds for a moment beyond the RGB result (``RGB_BYTES`` a pixel),
    from the mode in the header: the decoded source in its own mode (16-bit: 2 bytes a pixel, float
    and 32-bit: 4) plus the step to RGB (a grey copy for 16-bit and float, an RGBA copy for
    transparent modes other than RGBA); an EXIF rotation copies the source once more. An RGB image
    decodes straight into its result (0). Measured against the peak RSS in
    ``tests/inputs/test_images.py``.

    >>> decode_transient_bytes(Image.new("F", (10, 10)))  # 4 + 1 bytes a pixel, one row block
    10740
    """
    mode = image.mode
    source = SOURCE_BYTES.get(mode, RGB_BYTES)
    blocks = 0
    if mode == "RGB":
        step = 0
    elif mode in HIGH_DEPTH_MODES:
        step = source + 1
        blocks = BLOCK_BYTES * HIGH_DEPTH_BLOCK_ROWS * image.width
    elif mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        step = source + (0 if mode == "RGBA" else RGB_BYTES)
    else:
        step = source
    return (step + (source if transposed else 0)) * image.width * image.height + blocks


def _open_checked(data: bytes, limits: InputLimits, source: str) -> Image.Image:
    """Open (header only) and check bytes and pixel count."""
    check_image_bytes(len(data), limits, source)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputTooLarge(f"{source}: image dimensions exceed the pixel limit ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput(
            f"{source}: not a recognised image format (PNG, JPEG, WebP, GIF, TIFF, BMP, …)"
        ) from exc
    except DECODE_ERRORS as exc:
        raise InvalidInput(f"{source}: cannot read the image header ({exc})") from exc
    check_image_pixels(image.width, image.height, limits, source)
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); unreadable EXIF counts as upright."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def check_image_bytes(size: int, limits: InputLimits, source: str) -> None:
    """Refuse encoded image data over ``max_image_bytes``."""
    if size > limits.max_image_bytes:
        raise InputTooLarge(
            f"{source}: {size} bytes is more than the image limit of {limits.max_image_bytes} bytes"
        )


def check_image_pixels(width: int, height: int, limits: InputLimits, source: str) -> None:
    """Refuse an image (or rendered page) of more than ``max_image_pixels`` pixels."""
    if width * height > limits.max_image_pixels:
        raise InputTooLarge(
            f"{source}: {width}x{height} = {width * height} pixels is more than the limit of "
            f"{limits.max_image_pixels} pixels"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha on white, 16-bit and float scaled to 8 bits. Each
    path holds at most what :func:`decode_transient_bytes` counts.

    >>> to_rgb(Image.new("I;16", (1, 1), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # alpha over white, without an RGBA copy of the result
        return background
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit integer images (range 0…65535) and float images (range 0…1) to 8-bit RGB, scaled a
    block of rows at a time (see :data:`HIGH_DEPTH_BLOCK_ROWS`)."""
    scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
    width, height = image.size
    grey = Image.new("L", image.size)
    for top in range(0, height, HIGH_DEPTH_BLOCK_ROWS):
        bottom = min(top + HIGH_DEPTH_BLOCK_ROWS, height)
        values = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float64)
        values *= scale  # in place: one float64 array a block
        np.clip(np.rint(values, out=values), 0, 255, out=values)
        grey.paste(Image.fromarray(values.astype(np.uint8), mode="L"), (0, top))
    return grey.convert("RGB")


# --------------------------------------------------------------------- base64 and data URIs
def decode_base64_payload(
    text: str, *, what: str, media_types: tuple[str, ...], max_bytes: int | None = None
) -> bytes:
    """Bytes of raw base64 or of a ``data:<type>;base64,<payload>`` URI.

    The payload must use the standard alphabet (``A–Z a–z 0–9 + /``); whitespace (line breaks) is
    ignored and missing ``=`` padding is tolerated. A data URI's media type must start with one of
    ``media_types`` (or be ``application/octet-stream``).
    """
    payload = _data_uri_payload(text, what, media_types) if text[:5].lower() == "data:" else text
    compact = _WHITESPACE.sub("", payload).encode("ascii", errors="replace")
    if max_bytes is not None and len(compact) * 3 // 4 > max_bytes:
        raise InputTooLarge(f"{what}: the base64 data is more than the limit of {max_bytes} bytes")
    if not compact or len(compact) % 4 == 1 or not _BASE64_ALPHABET.fullmatch(compact):
        raise InvalidInput(
            f"{what}: not valid base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding)"
        )
    padded = compact.rstrip(b"=") + b"=" * (-len(compact.rstrip(b"=")) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"{what}: not valid base64 ({exc})") from exc


def _data_uri_payload(text: str, what: str, media_types: tuple[str, ...]) -> str:
    header, comma, payload = text.partition(",")
    if not comma:
        raise InvalidInput(f"{what}: a data URI needs a ',' before its payload")
    params = header[5:].split(";")
    media_type = params[0].strip().lower()
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise InvalidInput(f"{what}: only base64 data URIs are accepted (data:<type>;base64,...)")
    allowed = (*media_types, "application/octet-stream")
    if media_type and not media_type.startswith(allowed):
        raise InvalidInput(
            f"{what}: data URI type {media_type!r} is not one of {', '.join(allowed)}"
        )
    return payload


def decode_base64_image(text: str, *, max_bytes: int | None = None, source: str = "image") -> bytes:
    """The encoded image bytes in raw base64 or an ``image/*`` data URI (not yet decoded to pixels).

    >>> decode_base64_image("data:image/png;base64,iVBORw0KGgo=")
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    return decode_base64_payload(text, what=source, media_types=("image/",), max_bytes=max_bytes)


# --------------------------------------------------------------------- any source → image
def load_image(
    obj: ImageSource,
    limits: InputLimits | None = None,
    fetcher: SafeFetcher | None = None,
    *,
    allow_paths: bool = False,
    source: str = "image",
) -> Image.Image:
    """An RGB image from a PIL image, raw bytes, a data URI, base64, an http(s) URL or — only with
    ``allow_paths`` — a local file path (``str`` or ``os.PathLike``).

    A string is read as: a data URI if it starts with ``data:``; a URL if it starts with
    ``http://`` or ``https://`` (other schemes are refused); with ``allow_paths``, a file path if
    a file of that name exists; otherwise base64.
    """
    limits = limits or InputLimits()
    if isinstance(obj, Image.Image):
        return to_rgb(obj)
    return decode_image(
        read_image_bytes(obj, limits, fetcher, allow_paths=allow_paths, source=source),
        limits,
        source,
    )


def read_image_bytes(
    obj: object,
    limits: InputLimits,
    fetcher: SafeFetcher | None,
    *,
    allow_paths: bool,
    source: str,
) -> bytes:
    """The encoded bytes behind an image source (see :func:`load_image`), size-checked."""
    return read_source_bytes(
        obj,
        fetcher or SafeFetcher(limits),
        allow_paths=allow_paths,
        source=source,
        max_bytes=limits.max_image_bytes,
        media_types=("image/",),
        kind="image",
    )


def read_source_bytes(
    obj: object,
    fetcher: SafeFetcher,
    *,
    allow_paths: bool,
    source: str,
    max_bytes: int,
    media_types: tuple[str, ...],
    kind: str,
) -> bytes:
    """Shared by images and PDFs: bytes, a data URI, a URL, a path (if allowed) or base64."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
    elif isinstance(obj, os.PathLike):
        data = _read_path(Path(obj), allow_paths, source, max_bytes)
    elif isinstance(obj, str):
        data = _read_string(obj, fetcher, allow_paths, source, max_bytes, media_types)
    else:
        raise InvalidInput(
            f"{source}: expected {_forms(kind, allow_paths)}, got {type(obj).__name__}"
        )
    if len(data) > max_bytes:
        raise InputTooLarge(
            f"{source}: {len(data)} bytes is more than the {kind} limit of {max_bytes} bytes"
        )
    return data


def _read_string(
    text: str,
    fetcher: SafeFetcher,
    allow_paths: bool,
    source: str,
    max_bytes: int,
    media_types: tuple[str, ...],
) -> bytes:
    text = text.strip()
    if text[:5].lower() == "data:":
        return decode_base64_payload(
            text, what=source, media_types=media_types, max_bytes=max_bytes
        )
    if text[:8].lower().startswith(URL_SCHEMES):
        return fetcher.fetch(text, max_bytes=max_bytes)
    if _SCHEME.match(text) and "://" in text[:20]:
        scheme = text.split(":", 1)[0]
        raise InvalidInput(f"{source}: URL scheme {scheme!r} is not allowed; use http or https")
    if allow_paths and is_existing_file(text):
        return _read_path(Path(text).expanduser(), True, source, max_bytes)
    try:
        return decode_base64_payload(
            text, what=source, media_types=media_types, max_bytes=max_bytes
        )
    except InvalidInput:
        if allow_paths:
            raise InvalidInput(
                f"{source}: {_preview(text)} is neither an existing file nor valid base64"
            ) from None
        raise


def is_existing_file(text: str) -> bool:
    """Whether ``text`` names an existing file (False for strings no file system would accept)."""
    if len(text) > MAX_PATH_CHARS or "\x00" in text:
        return False
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def _read_path(path: Path, allow_paths: bool, source: str, max_bytes: int) -> bytes:
    if not allow_paths:
        raise InvalidInput(
            f"{source}: local file paths are not accepted here; send a URL, a data URI or base64"
        )
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputTooLarge(
                f"{source}: file {path} has {size} bytes, more than the limit of {max_bytes} bytes"
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInput(f"{source}: file not found: {path}") from exc
    except OSError as exc:
        raise InvalidInput(f"{source}: cannot read {path} ({exc.strerror or exc})") from exc


def _forms(kind: str, allow_paths: bool) -> str:
    extra = ", a file path" if allow_paths else ""
    image = "a PIL image, " if kind == "image" else ""
    return f"{image}bytes, an http(s) URL, a data URI, base64{extra}"


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
