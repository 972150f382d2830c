from __future__ import annotations

import base64
import math
import threading
from pathlib import Path

import pytest

from tests.helpers import pdf_bytes
from tests.inputs.input_samples import (
    LocalServer,
    encrypted_pdf,
    handmade_pdf,
    pageless_pdf,
)
from uniembed.errors import InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.limits import InputLimits
from uniembed.inputs.pdf import decode_base64_pdf, load_pdf, pdf_page_count, render_pdf
from uniembed.server.errors import status_of

RGB = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def centre(image) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    return image.getpixel((image.width // 2, image.height // 2))


def near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 8) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_pages_render_in_order_at_the_configured_dpi() -> None:
    colors = ["red", "green", "blue"]
    pages = render_pdf(pdf_bytes(colors, size=(200, 100)))
    assert len(pages) == 3
    scale = 150 / 72
    assert [page.size for page in pages] == [(math.ceil(200 * scale), math.ceil(100 * scale))] * 3
    assert all(page.mode == "RGB" for page in pages)
    for page, color in zip(pages, colors, strict=True):
        assert near(centre(page), RGB[color])


def test_dpi_changes_the_page_size() -> None:
    pages = render_pdf(pdf_bytes(["red"], size=(200, 100)), InputLimits(pdf_dpi=72))
    assert pages[0].size == (200, 100)
    pages = render_pdf(pdf_bytes(["red"], size=(200, 100)), InputLimits(pdf_dpi=144))
    assert pages[0].size == (400, 200)


def test_rotated_page_renders_upright() -> None:
    data = handmade_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Rotate 90 >>",
        ]
    )
    (page,) = render_pdf(data, InputLimits(pdf_dpi=72))
    assert page.size == (100, 200)
    assert centre(page) == RGB["white"]  # an empty page is rendered on white


def test_more_pages_than_allowed_is_an_error_with_both_numbers() -> None:
    data = pdf_bytes(["red", "green", "blue"])
    with pytest.raises(
        InputTooLarge, match="the PDF has 3 pages, more than the limit of 2"
    ) as info:
        render_pdf(data, InputLimits(max_pdf_pages=2), source="report.pdf")
    assert info.value.message.startswith("report.pdf: ")
    assert status_of(info.value) == 413
    assert len(render_pdf(data, InputLimits(max_pdf_pages=3))) == 3


def test_byte_limit() -> None:
    data = pdf_bytes(["red"])
    with pytest.raises(
        InputTooLarge, match=f"{len(data)} bytes is more than the PDF limit of 100 bytes"
    ):
        render_pdf(data, InputLimits(max_pdf_bytes=100))


def test_page_pixel_limit_names_the_page() -> None:
    data = pdf_bytes(["red", "green"], size=(200, 100))
    limits = InputLimits(pdf_dpi=72, max_image_pixels=19_999)
    with pytest.raises(
        InputTooLarge, match=r"^pdf page 1 of 2: 200x100 = 20000 pixels is more than the limit"
    ):
        render_pdf(data, limits)
    assert len(render_pdf(data, InputLimits(pdf_dpi=72, max_image_pixels=20_000))) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a pdf at all", "not a valid PDF"),
        (b"%PDF-1.4\n%%EOF", "not a valid PDF"),
        (pageless_pdf(), "not a valid PDF"),
        (encrypted_pdf(), "encrypted with a password"),
    ],
)
def test_corrupt_empty_and_encrypted_pdfs_are_invalid_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^scan.pdf: .*{message}"):
        render_pdf(data, source="scan.pdf")


def test_corrupt_pdf_after_encrypted_one_is_not_called_encrypted() -> None:
    with pytest.raises(InvalidInput, match="encrypted"):
        render_pdf(encrypted_pdf())
    with pytest.raises(InvalidInput, match="not a valid PDF"):
        render_pdf(pageless_pdf())


def test_page_count() -> None:
    assert pdf_page_count(pdf_bytes(["red", "blue"])) == 2


def test_renders_from_several_threads() -> None:
    data = pdf_bytes(["red", "green", "blue", "red"])
    results: list[list[tuple[int, int, int]]] = []

    def work() -> None:
        results.append([centre(page) for page in render_pdf(data, InputLimits(pdf_dpi=36))])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(
        near(c, RGB[n])
        for result in results
        for c, n in zip(result, ["red", "green", "blue", "red"])
    )


def test_base64_and_data_uri() -> None:
    data = pdf_bytes(["blue"])
    text = base64.b64encode(data).decode()
    assert decode_base64_pdf(text) == data
    assert decode_base64_pdf(f"data:application/pdf;base64,{text}") == data
    with pytest.raises(
        InvalidInput, match="data URI type 'image/png' is not one of application/pdf"
    ):
        decode_base64_pdf(f"data:image/png;base64,{text}")


def test_load_pdf_from_every_form(tmp_path: Path, local_server: LocalServer) -> None:
    data = pdf_bytes(["red", "blue"])
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    local_server.state.routes["/doc.pdf"] = data
    fetcher = SafeFetcher(InputLimits(allow_private_urls=True))
    sources: list[object] = [
        data,
        base64.b64encode(data).decode(),
        "data:application/pdf;base64," + base64.b64encode(data).decode(),
        local_server.url("/doc.pdf"),
    ]
    for source in sources:
        pages = load_pdf(source, fetcher=fetcher)
        assert [near(centre(p), RGB[c]) for p, c in zip(pages, ["red", "blue"], strict=True)] == [
            True,
            True,
        ]
    assert len(load_pdf(path, allow_paths=True)) == 2
    assert len(load_pdf(str(path), allow_paths=True)) == 2


def test_load_pdf_refuses_paths_without_allow_paths(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf_bytes(["red"]))
    with pytest.raises(InvalidInput, match="local file paths are not accepted"):
        load_pdf(path)


def test_load_pdf_download_uses_the_pdf_byte_limit(local_server: LocalServer) -> None:
    local_server.state.routes["/doc.pdf"] = pdf_bytes(["red"])
    limits = InputLimits(allow_private_urls=True, max_pdf_bytes=100)
    with pytest.raises(InputTooLarge, match="limit of 100 bytes"):
        load_pdf(local_server.url("/doc.pdf"), limits, SafeFetcher(limits))
