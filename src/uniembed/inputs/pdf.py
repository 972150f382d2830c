"""Render PDF pages to RGB images with pypdfium2: one image (and so one embedding) per page.

PDFium is not thread-safe, so every use of it holds one process-wide lock; the server calls
:func:`render_pdf` from worker threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image

from uniembed.errors import InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.images import (
    check_image_pixels,
    decode_base64_payload,
    read_source_bytes,
    to_rgb,
)
from uniembed.inputs.limits import InputLimits

PDF_MEDIA_TYPES = ("application/pdf", "application/x-pdf")
WHITE = (255, 255, 255, 255)
# A page renders into a BGR bitmap (3 bytes a pixel; opaque white fill), held while it is copied
# into its RGB image: what rendering costs beyond the page's RGB result (see inputs/budget.py).
PAGE_BITMAP_BYTES = 3

_PDFIUM_LOCK = threading.Lock()


def render_pdf(
    data: bytes, limits: InputLimits | None = None, source: str = "pdf"
) -> list[Image.Image]:
    """Render every page of a PDF, in order, at ``limits.pdf_dpi`` to RGB images.

    Refuses, before rendering anything: more than ``max_pdf_bytes`` bytes, more than
    ``max_pdf_pages`` pages (the error gives both numbers; pages are never dropped silently), and
    any page that would exceed ``max_image_pixels``. Encrypted or corrupt files are
    :class:`~uniembed.errors.InvalidInput`.
    """
    limits = limits or InputLimits()
    count = len(pdf_page_sizes(data, limits, source))
    return render_pages(data, range(count), limits, source)


def pdf_page_sizes(
    data: bytes, limits: InputLimits | None = None, source: str = "pdf"
) -> list[tuple[int, int]]:
    """The pixel size every page will render to, checked as :func:`render_pdf` checks it; nothing
    is rendered (page sizes come from the page tree), so a budget can be charged first."""
    limits = limits or InputLimits()
    check_pdf_bytes(len(data), limits, source)
    with _open_document(data, source) as document:
        count = len(document)
        check_page_count(count, limits, source)
        sizes = [_page_pixels(document, i, limits.pdf_render_scale) for i in range(count)]
    for number, (width, height) in enumerate(sizes, start=1):
        check_image_pixels(width, height, limits, page_source(source, number, count))
    return sizes


def render_pages(
    data: bytes,
    indices: Iterable[int],
    limits: InputLimits | None = None,
    source: str = "pdf",
    stop: threading.Event | None = None,
) -> list[Image.Image]:
    """Render the pages at 0-based ``indices`` (sizes already checked by :func:`pdf_page_sizes`).

    ``stop``: once set, no further page is rendered (:class:`~concurrent.futures.CancelledError`).
    """
    limits = limits or InputLimits()
    with _open_document(data, source) as document:
        pages = []
        for index in indices:
            if stop is not None and stop.is_set():
                raise CancelledError(f"{source}: rendering stopped")
            pages.append(_render_page(document, index, limits.pdf_render_scale, source))
        return pages


def pdf_page_count(data: bytes, source: str = "pdf") -> int:
    """Number of pages of a PDF, without rendering."""
    with _open_document(data, source) as document:
        return len(document)


def check_pdf_bytes(size: int, limits: InputLimits, source: str) -> None:
    """Refuse PDF data over ``max_pdf_bytes``."""
    if size > limits.max_pdf_bytes:
        raise InputTooLarge(
            f"{source}: {size} bytes is more than the PDF limit of {limits.max_pdf_bytes} bytes"
        )


def check_page_count(count: int, limits: InputLimits, source: str) -> None:
    """Refuse empty PDFs and PDFs with more than ``max_pdf_pages`` pages."""
    if count == 0:
        raise InvalidInput(f"{source}: the PDF has no pages")
    if count > limits.max_pdf_pages:
        raise InputTooLarge(
            f"{source}: the PDF has {count} pages, more than the limit of {limits.max_pdf_pages}; "
            "split it into smaller documents"
        )


def page_source(source: str, number: int, count: int | None = None) -> str:
    """Label of one page for errors and :class:`~uniembed.inputs.items.ImageItem.source`.

    >>> page_source("pdf", 2)
    'pdf page 2'
    """
    return f"{source} page {number}" if count is None else f"{source} page {number} of {count}"


def decode_base64_pdf(text: str, *, max_bytes: int | None = None, source: str = "pdf") -> bytes:
    """PDF bytes from raw base64 or an ``application/pdf`` data URI."""
    return decode_base64_payload(
        text, what=source, media_types=PDF_MEDIA_TYPES, max_bytes=max_bytes
    )


@contextmanager
def _open_document(data: bytes, source: str) -> Iterator[pdfium.PdfDocument]:
    """Open under the PDFium lock and always close the document."""
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise InvalidInput(_open_error(exc, data, source)) from exc
        try:
            yield document
        finally:
            document.close()


def _open_error(exc: pdfium.PdfiumError, data: bytes, source: str) -> str:
    # PDFium's error code can be left over from an earlier failure, so a password error is only
    # believed when the file has an encryption dictionary.
    encrypted = b"/Encrypt" in data
    if encrypted and exc.err_code == pdfium_raw.FPDF_ERR_PASSWORD:
        return f"{source}: the PDF is encrypted with a password; send an unencrypted PDF"
    if encrypted and exc.err_code == pdfium_raw.FPDF_ERR_SECURITY:
        return f"{source}: the PDF uses an unsupported security handler; send an unencrypted PDF"
    return f"{source}: not a valid PDF (corrupt, truncated, or without pages)"


def _page_pixels(document: pdfium.PdfDocument, index: int, scale: float) -> tuple[int, int]:
    """Pixel size a page will render to (rounded up, as PDFium does)."""
    width, height = document.get_page_size(index)
    return math.ceil(width * scale), math.ceil(height * scale)


def _render_page(
    document: pdfium.PdfDocument, index: int, scale: float, source: str
) -> Image.Image:
    page = document[index]
    try:
        bitmap = page.render(scale=scale, fill_color=WHITE)
        image = bitmap.to_pil()
        if image.readonly:  # it shares the bitmap's buffer: keep a copy once the bitmap is closed
            image = image.copy()
        bitmap.close()
        return to_rgb(image)
    except pdfium.PdfiumError as exc:
        raise InvalidInput(
            f"{page_source(source, index + 1)}: cannot render the page ({exc})"
        ) from exc
    finally:
        page.close()


def load_pdf(
    obj: object,
    limits: InputLimits | None = None,
    fetcher: SafeFetcher | None = None,
    *,
    allow_paths: bool = False,
    source: str = "pdf",
) -> list[Image.Image]:
    """Pages of a PDF given as bytes, an http(s) URL, a data URI, base64 or — only with
    ``allow_paths`` — a local file path (strings are told apart as in
    :func:`~uniembed.inputs.images.load_image`)."""
    limits = limits or InputLimits()
    return render_pdf(
        read_pdf_bytes(obj, limits, fetcher, allow_paths=allow_paths, source=source), limits, source
    )


def read_pdf_bytes(
    obj: object,
    limits: InputLimits,
    fetcher: SafeFetcher | None = None,
    *,
    allow_paths: bool = False,
    source: str = "pdf",
) -> bytes:
    """The bytes behind a PDF source (see :func:`load_pdf`), size-checked."""
    return read_source_bytes(
        obj,
        fetcher or SafeFetcher(limits),
        allow_paths=allow_paths,
        source=source,
        max_bytes=limits.max_pdf_bytes,
        media_types=PDF_MEDIA_TYPES,
        kind="PDF",
    )
