"""What one request may cost in all, charged before the work each charge bounds.

:class:`~uniembed.inputs.limits.InputLimits` caps one input; a :class:`RequestBudget` caps the sum
over a request: items (each PDF page counts one, counted from the page count before any page is
rendered), the memory decoding takes (read from image headers and PDF page sizes before any pixel is
decoded) and bytes downloaded from URLs. Each charge raises :class:`~uniembed.errors.InputTooLarge`
naming the limit as soon as the total passes it.

Decoding is charged in bytes, the limit given in pixels (``max_pixels_per_request`` × 4 bytes, the
RGB form every image and page is held in): each image or page costs its RGB result, and the request
its largest transient step on top, since images and pages are decoded and prepared one at a time:
the decode of a 16-bit, float or transparent image (its source and a grey or RGBA copy), a page's
bitmap (see :func:`~uniembed.inputs.images.decode_transient_bytes`), or the model's resize of the
full-size image (:data:`PREPARE_BYTES` a pixel).

>>> budget = RequestBudget(max_items=3, max_pixels=1000, max_fetch_bytes=10)
>>> budget.charge_items(2, "input 0")
>>> budget.charge_decode(9 * 9, 0, "input 1")
>>> budget.charge_decode(10 * 10, 300, "input 2")
>>> budget.charge_decode(20 * 20, 0, "input 3")  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
uniembed.errors.InputTooLarge: input 3: the request's images and PDF pages need 6324 bytes to
decode (581 pixels at 4 bytes, plus 4000 bytes while the costliest one is decoded and resized),
more than the request limit of 1000 pixels (max_pixels_per_request, 4000 bytes); send fewer or
smaller images, or pages at a lower resolution
"""

from __future__ import annotations

import sys

from uniembed.errors import InputTooLarge
from uniembed.inputs.images import RGB_BYTES

MiB = 1024 * 1024
DEFAULT_MAX_ITEMS = 2048
# 256 Mi pixels: 768 MiB as RGB, 1 GiB at 4 bytes a pixel (RGBA, the widest form a decode passes
# through) — a request's bound even if every one of its images were held decoded at once.
DEFAULT_MAX_PIXELS = 256 * MiB
DEFAULT_MAX_FETCH_BYTES = 256 * MiB
# The model's resize reads the full-size RGB image: jina-embeddings-v4's image processor makes a
# numpy and a PIL copy of it (10 bytes a pixel measured beyond the image, peak RSS).
PREPARE_BYTES = 10


class RequestBudget:
    """The running totals of one request against its limits (not thread-safe: charge from one
    task)."""

    def __init__(
        self,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES,
    ) -> None:
        self.max_items = max_items
        self.max_pixels = max_pixels
        self.max_fetch_bytes = max_fetch_bytes
        self.items = 0
        self.pixels = 0
        self.transient_bytes = 0  # the largest transient step of any image or page so far
        self.fetched_bytes = 0

    @classmethod
    def unlimited(cls) -> RequestBudget:
        """A budget nothing exceeds (callers without request-wide limits)."""
        return cls(max_items=sys.maxsize, max_pixels=sys.maxsize, max_fetch_bytes=sys.maxsize)

    @property
    def fetch_bytes_left(self) -> int:
        return max(self.max_fetch_bytes - self.fetched_bytes, 0)

    def charge_items(self, count: int, where: str | None = None) -> None:
        """Add ``count`` items (texts, images, PDF pages)."""
        self.items += count
        if self.items > self.max_items:
            raise InputTooLarge(
                f"{_prefix(where)}the request has {self.items} inputs (each PDF page counts one), "
                f"more than the request limit of {self.max_items} (max_items_per_request); split "
                "it into several requests"
            )

    @property
    def decode_bytes(self) -> int:
        """What decoding the request's images and pages costs at its peak (see the module)."""
        return self.pixels * RGB_BYTES + self.transient_bytes

    def charge_decode(self, pixels: int, transient_bytes: int, where: str | None = None) -> None:
        """Add an image or page of ``pixels`` (width × height) whose decoding holds
        ``transient_bytes`` beyond its RGB result for a moment (at least the model's resize)."""
        self.pixels += pixels
        self.transient_bytes = max(self.transient_bytes, transient_bytes, PREPARE_BYTES * pixels)
        if self.decode_bytes > self.max_pixels * RGB_BYTES:
            raise InputTooLarge(
                f"{_prefix(where)}the request's images and PDF pages need {self.decode_bytes} "
                f"bytes to decode ({self.pixels} pixels at {RGB_BYTES} bytes, plus "
                f"{self.transient_bytes} bytes while the costliest one is decoded and resized), "
                f"more than the request limit of {self.max_pixels} pixels (max_pixels_per_request, "
                f"{self.max_pixels * RGB_BYTES} bytes); send fewer or smaller images, or pages at "
                "a lower resolution"
            )

    def charge_fetch(self, size: int, where: str | None = None) -> None:
        """Add the bytes of one download."""
        self.fetched_bytes += size
        if self.fetched_bytes > self.max_fetch_bytes:
            raise self.fetch_exceeded(where)

    def fetch_exceeded(self, where: str | None = None) -> InputTooLarge:
        return InputTooLarge(
            f"{_prefix(where)}the request's downloads come to more than the request limit of "
            f"{self.max_fetch_bytes} bytes (max_fetch_bytes_per_request); send fewer or smaller "
            "URLs"
        )


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""
