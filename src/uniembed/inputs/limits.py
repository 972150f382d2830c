"""Every limit applied to raw inputs before they reach a model, in one frozen object.

The defaults suit a public server; the library uses the same defaults. Each value is checked when
the object is built, so a bad CLI flag fails at start-up rather than on the first request.

>>> InputLimits().pdf_render_scale
2.0833333333333335
>>> InputLimits(max_pdf_pages=0)
Traceback (most recent call last):
...
uniembed.errors.InvalidInput: InputLimits.max_pdf_pages must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from uniembed.core.checks import check_int
from uniembed.errors import InvalidInput

MiB = 1024 * 1024

# PDF user space is 1/72 inch per unit, so a render scale is dpi / 72.
POINTS_PER_INCH = 72.0
MIN_PDF_DPI = 36.0
MAX_PDF_DPI = 600.0


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """Caps on bytes, pixels, pages, time and text length for one input item.

    * ``max_image_bytes`` (20 MiB): encoded size of one image (file, download or base64 payload).
    * ``max_image_pixels`` (50,000,000): width × height of one decoded image or rendered PDF page,
      checked from the header *before* pixels are decoded. The model card allows 20-megapixel
      images; 50 MP also admits 48/50-MP phone photos and 8K frames (33 MP) while bounding one
      decode to about 200 MB (RGBA, 4 bytes a pixel).
    * ``max_pdf_bytes`` (50 MiB) and ``max_pdf_pages`` (50): a PDF with more pages is refused, never
      silently cut.
    * ``pdf_dpi`` (150): render resolution of PDF pages. An A4 page becomes 1240 × 1754 pixels
      (2.2 MP), above the model's default image budget (0.6 MP) so the model's own resize decides
      the final size, as colpali-style document-retrieval pipelines do.
    * ``fetch_timeout`` (15 s): total time for one URL, redirects and download included.
    * ``max_redirects`` (5): redirect hops followed per URL; each hop is checked again.
    * ``max_concurrent_fetches`` (8): URLs one request downloads at the same time (server, async).
    * ``allow_private_urls`` (False): allow URLs on loopback, private, link-local and other
      non-public addresses. Only for trusted deployments.
    * ``max_text_chars`` (262,144): characters in one text item of a server request, checked
      before tokenising: 8 characters a token for the longest context (32,768 tokens).
    """

    max_image_bytes: int = 20 * MiB
    max_image_pixels: int = 50_000_000
    max_pdf_bytes: int = 50 * MiB
    max_pdf_pages: int = 50
    pdf_dpi: float = 150.0
    fetch_timeout: float = 15.0
    max_redirects: int = 5
    max_concurrent_fetches: int = 8
    allow_private_urls: bool = False
    max_text_chars: int = 262_144

    def __post_init__(self) -> None:
        for name in (
            "max_image_bytes",
            "max_image_pixels",
            "max_pdf_bytes",
            "max_pdf_pages",
            "max_concurrent_fetches",
            "max_text_chars",
        ):
            check_int(f"InputLimits.{name}", getattr(self, name))
        check_int("InputLimits.max_redirects", self.max_redirects, minimum=0)
        _check_number("pdf_dpi", self.pdf_dpi, MIN_PDF_DPI, MAX_PDF_DPI)
        _check_number("fetch_timeout", self.fetch_timeout, 0.001, 600.0)
        if not isinstance(self.allow_private_urls, bool):
            raise InvalidInput(
                "InputLimits.allow_private_urls must be true or false, "
                f"got {self.allow_private_urls!r}"
            )

    @property
    def pdf_render_scale(self) -> float:
        """Pixels per PDF point (``pdf_dpi / 72``), the scale pypdfium2 renders with."""
        return self.pdf_dpi / POINTS_PER_INCH

    @property
    def max_download_bytes(self) -> int:
        """The largest body any download may have (an image or a PDF)."""
        return max(self.max_image_bytes, self.max_pdf_bytes)


def _check_number(name: str, value: object, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:  # type: ignore[operator]
        raise InvalidInput(
            f"InputLimits.{name} must be a number between {low:g} and {high:g}, got {value!r}"
        )
