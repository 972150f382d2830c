"""The decoded items a model embeds. Parsing raw inputs into these lives in ``inputs.parse``."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class TextItem:
    """A text to embed."""

    text: str


@dataclass(frozen=True)
class ImageItem:
    """A decoded RGB image (a photo, a screenshot, or one rendered PDF page)."""

    image: Image.Image
    source: str = "image"  # for error messages: "image", "pdf page 3", …


Item = TextItem | ImageItem
