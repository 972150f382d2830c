"""Inputs that are read and measured but not yet decoded: the server's lazy items.

A request's images and PDF pages are first *probed* — bytes in hand, width and height known from the
image header or the PDF page tree — so its budget is charged before any pixel is decoded. Then
:func:`load_pending` decodes images and renders pages a few at a time, as the server needs them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass

from uniembed.errors import UniembedError, labelled
from uniembed.inputs.images import decode_image
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits
from uniembed.inputs.pdf import PAGE_BITMAP_BYTES, page_source, render_pages


@dataclass(frozen=True, eq=False)
class PendingImage:
    """Encoded image bytes whose header has been read and checked."""

    data: bytes
    width: int
    height: int
    origin: int  # index of the request input it came from
    transient_bytes: int = 0  # held beyond the RGB result while it decodes (16-bit, float, alpha)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, eq=False)
class PendingPage:
    """One page of a PDF (``data`` is shared by all its pages), its render size checked."""

    data: bytes
    index: int  # 0-based page index
    width: int
    height: int
    origin: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def transient_bytes(self) -> int:
        """The page's bitmap, held while it becomes an RGB image."""
        return PAGE_BITMAP_BYTES * self.pixels


Pending = TextItem | PendingImage | PendingPage


def pending_pixels(pending: Pending) -> int:
    """Pixels ``pending`` decodes to (0 for text)."""
    return 0 if isinstance(pending, TextItem) else pending.pixels


def load_pending(
    pending: Sequence[Pending],
    limits: InputLimits | None = None,
    stop: threading.Event | None = None,
) -> list[Item]:
    """Decode images and render pages, in order (consecutive pages of one PDF in one pass).

    Errors name the request input; once ``stop`` is set nothing more is decoded
    (:class:`~concurrent.futures.CancelledError`).
    """
    limits = limits or InputLimits()
    items: list[Item] = []
    for _, run in itertools.groupby(pending, key=_document_of):
        group = list(run)
        if stop is not None and stop.is_set():
            raise CancelledError("the request was cancelled")
        try:
            items.extend(_load_run(group, limits, stop))
        except UniembedError as exc:
            raise labelled(exc, _origin(group[0])) from exc
    return items


def _load_run(
    group: list[Pending], limits: InputLimits, stop: threading.Event | None
) -> list[Item]:
    """The items of one group: the pages of one PDF run, or a single image or text."""
    first = group[0]
    if isinstance(first, PendingPage):
        pages = [entry for entry in group if isinstance(entry, PendingPage)]
        images = render_pages(first.data, [page.index for page in pages], limits, "pdf", stop)
        return [
            ImageItem(image, page_source("pdf", page.index + 1))
            for image, page in zip(images, pages)
        ]
    if isinstance(first, PendingImage):
        return [ImageItem(decode_image(first.data, limits))]
    return [first]


def _document_of(entry: Pending) -> int:
    """Pages of one PDF share a key (the identity of its bytes); every other entry its own."""
    return id(entry.data) if isinstance(entry, PendingPage) else id(entry)


def _origin(entry: Pending) -> int | None:
    return None if isinstance(entry, TextItem) else entry.origin


def in_parts(
    pending: Sequence[Pending], max_items: int, max_pixels: int
) -> Iterator[list[Pending]]:
    """Consecutive parts of ``pending`` with at most ``max_items`` entries and ``max_pixels``
    decoded pixels each (an entry larger than ``max_pixels`` is a part of its own).

    >>> sizes = [PendingImage(b"", w, 10, 0) for w in (5, 5, 20, 1)]
    >>> [[e.width for e in part] for part in in_parts(sizes, max_items=3, max_pixels=100)]
    [[5, 5], [20], [1]]
    """
    part: list[Pending] = []
    pixels = 0
    for entry in pending:
        size = pending_pixels(entry)
        if part and (len(part) == max_items or pixels + size > max_pixels):
            yield part
            part, pixels = [], 0
        part.append(entry)
        pixels += size
    if part:
        yield part
