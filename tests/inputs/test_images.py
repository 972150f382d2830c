from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import png_bytes
from tests.inputs.input_samples import LocalServer
from uniembed.errors import FetchError, InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.images import decode_base64_image, decode_image, load_image, to_rgb
from uniembed.inputs.limits import InputLimits
from uniembed.server.errors import status_of


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` × ``height``, then garbage instead of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(ihdr))
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )
    idat = struct.pack(">I", 64) + b"IDAT" + b"\x07" * 64 + b"\x00" * 4
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------- decode_image
def test_decodes_png_to_rgb_pixels() -> None:
    image = decode_image(png_bytes((10, 200, 30), (8, 6)))
    assert image.mode == "RGB" and image.size == (8, 6)
    assert image.getpixel((7, 5)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # transparent → white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),  # half alpha over white
        ("LA", (0, 0), (255, 255, 255)),
        ("LA", (40, 255), (40, 40, 40)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),
    ],
)
def test_modes_convert_to_rgb(mode: str, color: object, expected: tuple[int, int, int]) -> None:
    image = decode_image(encode(Image.new(mode, (4, 3), color)))  # type: ignore[arg-type]
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == expected


def test_palette_with_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    image = decode_image(encode(palette, transparency=0))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 1)) == (0, 0, 255)


def test_32_bit_integer_tiff_is_read_as_16_bit_range() -> None:
    image = decode_image(encode(Image.new("I", (3, 3), 65535), "TIFF"))
    assert image.getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_jpeg_converts_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    assert close(image.getpixel((8, 8)), (255, 0, 0), tolerance=12)


def test_float_images_are_scaled_from_unit_range() -> None:
    assert to_rgb(Image.new("F", (2, 2), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("F", (2, 2), 7.0)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    image = decode_image(encode(stored, "JPEG", quality=95, exif=exif))
    assert image.size == (20, 40)
    assert close(image.getpixel((10, 5)), (255, 0, 0), 20)  # left → top
    assert close(image.getpixel((10, 35)), (0, 0, 255), 20)  # right → bottom


def test_only_first_frame_of_an_animation() -> None:
    frames = [Image.new("RGB", (5, 5), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert close(decode_image(data).getpixel((2, 2)), (255, 0, 0))


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 8000 × 8000 = 64 MP: over our default limit, under Pillow's own bomb error. The pixel data is
    # garbage, so a decode attempt would give InvalidInput, not InputTooLarge.
    with pytest.raises(
        InputTooLarge, match="8000x8000 = 64000000 pixels is more than the limit of 50000000"
    ):
        decode_image(png_header_only(8000, 8000), source="upload.png")


def test_pixel_limit_is_configurable() -> None:
    data = png_bytes(size=(100, 100))
    with pytest.raises(InputTooLarge, match="100x100 = 10000 pixels"):
        decode_image(data, InputLimits(max_image_pixels=9999))
    assert decode_image(data, InputLimits(max_image_pixels=10000)).size == (100, 100)


def test_pillow_decompression_bomb_becomes_input_too_large() -> None:
    limits = InputLimits(max_image_pixels=10**12)
    with pytest.raises(InputTooLarge, match="pixel limit") as info:
        decode_image(png_header_only(100_000, 100_000), limits)
    assert status_of(info.value) == 413


def test_byte_limit() -> None:
    with pytest.raises(InputTooLarge, match="more than the image limit of 10 bytes"):
        decode_image(png_bytes(), InputLimits(max_image_bytes=10))


def test_unknown_format_names_the_source() -> None:
    with pytest.raises(InvalidInput, match="^photo.jpg: not a recognised image format"):
        decode_image(b"this is not an image", source="photo.jpg")


def test_truncated_image_is_invalid_input() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(InvalidInput, match="^scan: the image data is corrupt or truncated"):
        decode_image(data[: len(data) // 2], source="scan")


# --------------------------------------------------------------------- base64
def test_base64_raw_data_uri_whitespace_and_missing_padding() -> None:
    data = png_bytes()
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text) == data
    assert decode_base64_image(f"data:image/png;base64,{text}") == data
    assert decode_base64_image(f"DATA:image/webp;charset=x;BASE64,{text}") == data
    assert decode_base64_image("\n".join(text[i : i + 76] for i in range(0, len(text), 76))) == data
    assert decode_base64_image(base64.b64encode(b"ab").decode().rstrip("=")) == b"ab"


@given(st.binary(min_size=1, max_size=300))
def test_base64_round_trip(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text) == data
    assert decode_base64_image("data:image/jpeg;base64," + text) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "not valid base64"),
        ("abc*", "not valid base64"),
        ("abcde", "not valid base64"),  # 5 characters can never be base64
        ("YWJj-_", "not valid base64"),  # URL-safe alphabet is refused
        ("", "not valid base64"),
        ("YW=Jj", "not valid base64"),
        ("data:image/png;base64", "needs a ','"),
        ("data:image/png,rawbytes", "only base64 data URIs"),
        ("data:text/html;base64,PGgxPg==", "data URI type 'text/html' is not one of image/"),
    ],
)
def test_base64_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_base64_image(text)


def test_base64_over_the_byte_limit_is_refused_before_decoding() -> None:
    with pytest.raises(InputTooLarge, match="more than the limit of 100 bytes"):
        decode_base64_image("A" * 1000, max_bytes=100)


# --------------------------------------------------------------------- load_image
def test_load_image_accepts_every_form(tmp_path: Path) -> None:
    data = png_bytes((1, 2, 3))
    text = base64.b64encode(data).decode()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    sources: list[object] = [
        data,
        bytearray(data),
        memoryview(data),
        text,
        f"data:image/png;base64,{text}",
        Image.open(io.BytesIO(data)),
    ]
    for source in sources:
        assert load_image(source).getpixel((0, 0)) == (1, 2, 3)  # type: ignore[arg-type]
    assert load_image(str(path), allow_paths=True).getpixel((0, 0)) == (1, 2, 3)
    assert load_image(path, allow_paths=True).getpixel((0, 0)) == (1, 2, 3)


def test_pil_input_is_converted_to_rgb() -> None:
    image = load_image(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_paths_are_refused_without_allow_paths(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes())
    with pytest.raises(InvalidInput, match="local file paths are not accepted"):
        load_image(path)
    with pytest.raises(InvalidInput, match="not valid base64"):  # a path string is just bad base64
        load_image(str(path))


def test_missing_path_and_bad_base64_with_allow_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is neither an existing file nor valid base64"):
        load_image(str(tmp_path / "missing.png"), allow_paths=True)
    with pytest.raises(InvalidInput, match="file not found"):
        load_image(tmp_path / "missing.png", allow_paths=True)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(size=(50, 50)))
    with pytest.raises(
        InputTooLarge, match=r"big.png has \d+ bytes, more than the limit of 20 bytes"
    ):
        load_image(path, InputLimits(max_image_bytes=20), allow_paths=True)


def test_directory_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load_image(tmp_path, allow_paths=True)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/a.png", "gopher://host/"])
def test_other_url_schemes_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="is not allowed; use http or https"):
        load_image(url, allow_paths=True)


def test_unsupported_type() -> None:
    with pytest.raises(
        InvalidInput,
        match=r"^image: expected a PIL image, bytes, an http\(s\) URL, a data URI, base64, got int",
    ):
        load_image(42)  # type: ignore[arg-type]


def test_url_goes_through_the_fetcher(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes((9, 8, 7))
    allowing = SafeFetcher(InputLimits(allow_private_urls=True))
    assert load_image(local_server.url("/a.png"), fetcher=allowing).getpixel((0, 0)) == (9, 8, 7)
    with pytest.raises(FetchError, match="loopback"):
        load_image(local_server.url("/a.png"))


def test_url_download_uses_the_image_byte_limit(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes(size=(64, 64))
    limits = InputLimits(allow_private_urls=True, max_image_bytes=50)
    with pytest.raises(InputTooLarge, match="limit of 50 bytes"):
        load_image(local_server.url("/a.png"), limits, SafeFetcher(limits))


# --------------------------------------------------------------------- what a decode costs
PEAK_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from uniembed.inputs.images import RGB_BYTES, decode_image, read_image_header
from uniembed.inputs.limits import InputLimits

mode, side = sys.argv[1], int(sys.argv[2])
if mode in ("I;16", "F"):
    values = np.linspace(0, 1 if mode == "F" else 60000, side * side).reshape(side, side)
    image = Image.fromarray(values.astype(np.float32 if mode == "F" else np.uint16))
elif mode == "P":
    image = Image.new("P", (side, side), 7)
    image.info["transparency"] = 7
else:
    image = Image.new(mode, (side, side))
buffer = io.BytesIO()
image.save(buffer, "TIFF" if mode == "F" else "PNG")
data = buffer.getvalue()
del image, buffer
limits = InputLimits(max_image_bytes=1 << 30)
width, height, transient = read_image_header(data, limits)

def status(field):
    with open("/proc/self/status") as lines:
        return int(next(l for l in lines if l.startswith(field + ":")).split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status("VmRSS")
decode_image(data, limits)
print(status("VmHWM") - before, width * height * RGB_BYTES + transient)
"""


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "LA", "P", "RGB", "L"])
def test_the_decode_cost_read_from_the_header_covers_the_measured_peak(mode: str) -> None:
    """16-bit images were converted through a float64 copy (8 bytes a pixel, 26 in all at the peak)
    and transparent ones through three RGBA copies: the budget, charged from the header, counted
    neither."""
    import subprocess
    import sys

    side = 3000
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, mode, str(side)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    measured, charged = (int(value) for value in result.stdout.split())
    slack = side * side // 2  # half a byte a pixel: block buffers, allocator rounding
    assert measured <= charged + slack, (measured / side**2, charged / side**2)
    assert charged <= 13 * side * side  # and no wild overcount: at most 13 bytes a pixel (LA)


def test_an_exif_rotation_is_charged_from_the_header_without_decoding() -> None:
    from uniembed.inputs.images import read_image_header

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: exif_transpose copies the image once more
    rotated = encode(Image.new("RGB", (40, 30)), "JPEG", exif=exif)
    upright = encode(Image.new("RGB", (40, 30)), "JPEG")
    assert read_image_header(rotated) == (40, 30, 4 * 40 * 30)
    assert read_image_header(upright) == (40, 30, 0)
