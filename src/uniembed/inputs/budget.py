"""What one request may cost in all, charged before the work each charge bounds.

:class:`~uniembed.inputs.limits.InputLimits` caps one input; a :class:`RequestBudget` caps the sum
over a request: items (each PDF page counts one, counted from the page count before any page is
rendered), decoded pixels (read from image headers and PDF page sizes before any pixel is decoded)
and bytes downloaded from URLs. Each charge raises :class:`~uniembed.errors.InputTooLarge` naming
the limit as soon as the total passes it.

>>> budget = RequestBudget(max_items=3, max_pixels=100, max_fetch_bytes=10)
>>> budget.charge_items(2, "input 0")
>>> budget.charge_pixels(9 * 9, "input 1")
>>> budget.charge_pixels(5 * 5, "input 2")  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
uniembed.errors.InputTooLarge: input 2: the request's images and PDF pages come to 106 pixels,
more than the request limit of 100 (max_pixels_per_request); send fewer or smaller images, or pages
at a lower resolution
"""

from __future__ import annotations

import sys

from uniembed.errors import InputTooLarge

MiB = 1024 * 1024
DEFAULT_MAX_ITEMS = 2048
# 256 Mi pixels: 768 MiB as RGB, 1 GiB at 4 bytes a pixel (RGBA, the widest form a decode passes
# through) — a request's bound even if every one of its images were held decoded at once.
DEFAULT_MAX_PIXELS = 256 * MiB
DEFAULT_MAX_FETCH_BYTES = 256 * MiB


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

    def charge_pixels(self, pixels: int, where: str | None = None) -> None:
        """Add the decoded size of an image or page (width × height)."""
        self.pixels += pixels
        if self.pixels > self.max_pixels:
            raise InputTooLarge(
                f"{_prefix(where)}the request's images and PDF pages come to {self.pixels} pixels, "
                f"more than the request limit of {self.max_pixels} (max_pixels_per_request); send "
                "fewer or smaller images, or pages at a lower resolution"
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
