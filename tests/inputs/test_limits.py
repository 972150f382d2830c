from __future__ import annotations

import dataclasses

import pytest

from uniembed.errors import InvalidInput
from uniembed.inputs.limits import InputLimits, MiB


def test_defaults() -> None:
    limits = InputLimits()
    assert limits.max_image_bytes == 20 * MiB
    assert limits.max_image_pixels == 50_000_000
    assert limits.max_image_pixels >= 20_000_000  # the model card's 20-MP images fit
    assert (limits.max_pdf_bytes, limits.max_pdf_pages, limits.pdf_dpi) == (50 * MiB, 50, 150.0)
    assert limits.pdf_render_scale == pytest.approx(150 / 72)
    assert limits.max_download_bytes == 50 * MiB
    assert limits.allow_private_urls is False
    assert (limits.fetch_timeout, limits.max_redirects, limits.max_text_chars) == (15.0, 5, 262_144)


def test_frozen_and_keyword_only() -> None:
    limits = InputLimits(max_pdf_pages=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_pdf_pages = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        InputLimits(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_image_bytes", 0, "max_image_bytes must be an integer >= 1, got 0"),
        ("max_image_pixels", -5, "max_image_pixels must be an integer >= 1"),
        ("max_pdf_pages", 2.5, "max_pdf_pages must be an integer >= 1, got 2.5"),
        ("max_pdf_bytes", True, "max_pdf_bytes must be an integer >= 1, got True"),
        ("max_text_chars", "10", "max_text_chars must be an integer"),
        ("max_concurrent_fetches", 0, "max_concurrent_fetches must be an integer >= 1"),
        ("max_redirects", -1, "max_redirects must be an integer >= 0, got -1"),
        ("pdf_dpi", 10, "pdf_dpi must be a number between 36 and 600, got 10"),
        ("pdf_dpi", float("nan"), "pdf_dpi must be a number between 36 and 600"),
        ("fetch_timeout", 0, "fetch_timeout must be a number between 0.001 and 600, got 0"),
        ("fetch_timeout", float("inf"), "fetch_timeout must be a number"),
        ("allow_private_urls", "yes", "allow_private_urls must be true or false, got 'yes'"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        InputLimits(**{field: value})  # type: ignore[arg-type]


def test_edge_values_are_allowed() -> None:
    limits = InputLimits(max_redirects=0, pdf_dpi=36, fetch_timeout=600, max_pdf_pages=1)
    assert limits.pdf_render_scale == 0.5
