"""What an index stores: documents (a text, an image, or a PDF of pages) with ids and metadata,
made from library inputs, files or folders; and the thumbnails a search page shows.

Inputs are parsed by :mod:`uniembed.inputs.parse` (the library form, where paths are allowed); the
server parses its own requests with the API form (no paths, its limits) and builds
:class:`Document` s from those items.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from uniembed.errors import InvalidInput
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits

Kind = Literal["text", "image", "pdf"]
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
PDF_SUFFIXES = (".pdf",)
THUMBNAIL_SIDE = 384  # longest side of a stored page thumbnail, in pixels


@dataclass(frozen=True)
class Document:
    """One document to index: its id, its parsed items (one per PDF page) and JSON metadata."""

    id: str
    kind: Kind
    items: tuple[Item, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file it came from, when it did

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidInput(f"document id must be a non-empty string, got {self.id!r}")
        if not self.items:
            raise InvalidInput(f"document {self.id!r} has nothing to index")
        if not isinstance(self.metadata, dict):
            raise InvalidInput(f"document {self.id!r}: metadata must be a JSON object")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"document {self.id!r}: metadata is not JSON ({error})") from None

    @property
    def entry_kind(self) -> str:
        """What each of its entries is: ``text``, ``image`` or ``page`` (of a PDF)."""
        return "page" if self.kind == "pdf" else self.kind


def kind_of_input(value: Any) -> Kind:
    """The document kind of a library input (a string is a text; dicts say what they hold)."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, Image.Image):
        return "image"
    if isinstance(value, Mapping):
        kinds = [k for k in ("text", "image", "pdf") if k in value]
        if len(kinds) == 1:
            return kinds[0]  # type: ignore[return-value]
    raise InvalidInput(
        "expected a string, a PIL image or a dict with one of 'text', 'image', 'pdf'; got "
        f"{type(value).__name__}"
    )


def documents_from_inputs(
    inputs: Sequence[Any],
    ids: Sequence[str] | None = None,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
    limits: InputLimits | None = None,
) -> Iterator[Document]:
    """Library inputs (strings, PIL images, ``{"text"|"image"|"pdf": …}``; paths allowed) →
    documents, one at a time (a PDF is rendered when its turn comes). Ids default to random ones."""
    from uniembed.inputs.parse import coerce_items_with_origin

    if ids is not None and len(ids) != len(inputs):
        raise InvalidInput(f"got {len(ids)} ids for {len(inputs)} inputs")
    if metadata is not None and len(metadata) != len(inputs):
        raise InvalidInput(f"got {len(metadata)} metadata objects for {len(inputs)} inputs")
    for position, value in enumerate(inputs):
        doc_id = ids[position] if ids is not None else uuid.uuid4().hex
        try:
            items, _ = coerce_items_with_origin([value], limits)
        except InvalidInput as error:
            raise type(error)(f"document {doc_id!r}: {error.message}") from error
        extra = dict(metadata[position] or {}) if metadata is not None else {}
        yield Document(doc_id, kind_of_input(value), tuple(items), extra)


def documents_from_path(path: str | Path, limits: InputLimits | None = None) -> Iterator[Document]:
    """A file, or every supported file under a folder (sorted): texts, images and PDFs.

    A file's id is its path as given; a folder's files are named by their path inside the folder.
    Other files are skipped.
    """
    root = Path(path).expanduser()
    if root.is_file():
        yield document_from_file(root, str(path), limits)
        return
    if not root.is_dir():
        raise InvalidInput(f"{path}: no such file or folder")
    for file in sorted(p for p in root.rglob("*") if p.is_file() and _kind_of_file(p) is not None):
        yield document_from_file(file, file.relative_to(root).as_posix(), limits)


def count_documents(path: str | Path) -> int:
    """How many documents :func:`documents_from_path` yields for ``path`` (a progress bar's
    total), without reading them."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return 1
    return sum(1 for p in root.rglob("*") if p.is_file() and _kind_of_file(p) is not None)


def document_from_file(path: Path, doc_id: str, limits: InputLimits | None = None) -> Document:
    """One file as a document (its kind from the suffix)."""
    from uniembed.inputs.parse import coerce_items_with_origin

    kind = _kind_of_file(path)
    if kind is None:
        raise InvalidInput(f"{path}: unsupported file type {path.suffix!r}")
    if kind == "text":
        try:
            items: list[Item] = [TextItem(path.read_text(encoding="utf-8"))]
        except UnicodeDecodeError as error:
            raise InvalidInput(
                f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
    else:
        try:
            items, _ = coerce_items_with_origin([{kind: str(path)}], limits)
        except InvalidInput as error:
            raise type(error)(f"{path}: {error.message}") from error
    return Document(doc_id, kind, tuple(items), {}, str(path))


def _kind_of_file(path: Path) -> Kind | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    return None


def thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> str:
    """A JPEG data URI of ``image`` scaled to at most ``side`` pixels on its longest side."""
    small = image.copy()
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def item_input(item: Item) -> Any:
    """A parsed item back in the form ``Embedder.encode`` takes (a string or a PIL image)."""
    return item.text if isinstance(item, TextItem) else item.image


__all__ = [
    "Document",
    "ImageItem",
    "documents_from_inputs",
    "documents_from_path",
    "thumbnail",
]
