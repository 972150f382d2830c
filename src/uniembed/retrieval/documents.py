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
import math
import unicodedata
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from uniembed.errors import InputTooLarge, InvalidInput
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits

Kind = Literal["text", "image", "pdf"]
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
PDF_SUFFIXES = (".pdf",)
THUMBNAIL_SIDE = 384  # longest side of a stored page thumbnail, in pixels
# What one document may carry into the store (docs/search.md lists them). The store's log reader
# gives up on payloads nested ~120 levels: far deeper than the depth allowed here.
MAX_ID_CHARS = 1024
MAX_METADATA_DEPTH = 32  # nesting of objects and lists, the metadata object itself being level 1
MAX_METADATA_KEYS = 1024  # object keys at every level together
MAX_METADATA_BYTES = 64 * 1024  # of the metadata as compact UTF-8 JSON
INT64 = (-(2**63), 2**63 - 1)  # the store keeps integers as signed 64-bit


@dataclass(frozen=True)
class Document:
    """One document to index: its id, its parsed items (one per PDF page) and JSON metadata."""

    id: str
    kind: Kind
    items: tuple[Item, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file it came from, when it did

    def __post_init__(self) -> None:
        check_id(self.id)
        if not self.items:
            raise InvalidInput(f"document {self.id!r} has nothing to index")
        check_metadata(self.metadata, f"document {self.id!r}")
        for item in self.items:
            if isinstance(item, TextItem):
                check_text(item.text, f"document {self.id!r}: its text")

    @property
    def entry_kind(self) -> str:
        """What each of its entries is: ``text``, ``image`` or ``page`` (of a PDF)."""
        return "page" if self.kind == "pdf" else self.kind


def check_id(doc_id: Any) -> None:
    """Refuse a document id the store could not keep or a client could not name again: not a
    non-empty string, over :data:`MAX_ID_CHARS`, a control character (a newline cannot travel in
    a URL path, so such a document could never be deleted over HTTP) or a lone surrogate."""
    if not isinstance(doc_id, str) or not doc_id:
        raise InvalidInput(f"document id must be a non-empty string, got {doc_id!r:.80}")
    if len(doc_id) > MAX_ID_CHARS:
        raise InputTooLarge(
            f"document id {doc_id[:40]!r}… has {len(doc_id):,} characters; the limit is "
            f"{MAX_ID_CHARS:,} characters"
        )
    for position, char in enumerate(doc_id):
        if unicodedata.category(char) == "Cc":
            raise InvalidInput(
                f"document id {doc_id!r:.80} holds a control character ({char!r}) at position "
                f"{position}: ids must be printable"
            )
    check_text(doc_id, f"document id {doc_id!r:.80}")


def check_text(text: str, what: str) -> None:
    """Refuse a string that is not valid Unicode (a lone surrogate: it has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInput(
            f"{what} holds a lone surrogate ({text[error.start]!r}) at position {error.start}: "
            "not valid Unicode"
        ) from None


def check_metadata(metadata: Any, owner: str) -> None:
    """Refuse metadata the store could not keep or read back (``owner`` starts the message): not
    a JSON object, nested deeper than :data:`MAX_METADATA_DEPTH`, more than
    :data:`MAX_METADATA_KEYS` keys or :data:`MAX_METADATA_BYTES` bytes, or holding a value that is
    not JSON (NaN, infinities, integers beyond 64 bits, lone surrogates, other Python types). The
    message names the field (``metadata.a.b[2]``) and the limit.

    >>> check_metadata({"lang": "en", "tags": ["a", "b"], "n": {"pages": 3}}, "doc")
    >>> check_metadata({"x": float("nan")}, "doc")
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: doc: metadata.x is nan; numbers must be finite
    """
    if not isinstance(metadata, dict):
        raise InvalidInput(
            f"{owner}: metadata must be a JSON object, got {type(metadata).__name__}"
        )
    keys = 0
    pending: list[tuple[str, Any, int]] = [("metadata", metadata, 1)]  # (field, value, depth)
    while pending:  # iterative: no recursion limit to hit, however deep the value
        field, value, depth = pending.pop()
        if isinstance(value, (dict, list)) and depth > MAX_METADATA_DEPTH:
            raise InputTooLarge(
                f"{owner}: metadata nests deeper than the limit of {MAX_METADATA_DEPTH} levels "
                f"(at {_short(field)})"
            )
        if isinstance(value, dict):
            keys += len(value)
            if keys > MAX_METADATA_KEYS:
                raise InputTooLarge(
                    f"{owner}: metadata has more keys than the limit of {MAX_METADATA_KEYS:,} "
                    "(all levels together)"
                )
            for key, inner in value.items():
                if not isinstance(key, str):
                    raise InvalidInput(f"{owner}: {_short(field)}: keys must be strings")
                check_text(key, f"{owner}: a key of {_short(field)}")
                pending.append((f"{field}.{key}", inner, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{field}[{i}]", inner, depth + 1) for i, inner in enumerate(value))
        else:
            _check_scalar(value, f"{owner}: {_short(field)}")
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InputTooLarge(
            f"{owner}: metadata is {size:,} bytes as JSON, over the limit of "
            f"{MAX_METADATA_BYTES:,} bytes"
        )


def _check_scalar(value: Any, field: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidInput(f"{field} is {value}, beyond a signed 64-bit integer")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{field} is {value}; numbers must be finite")
    elif isinstance(value, str):
        check_text(value, field)
    else:
        raise InvalidInput(
            f"{field} is not JSON (a {type(value).__name__}); metadata holds only objects, lists, "
            "strings, numbers, true/false and null"
        )


def _short(field: str, limit: int = 80) -> str:
    """A field path for a message, its middle cut when long."""
    return field if len(field) <= limit else f"{field[:40]}…{field[-30:]}"


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
    doc_ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in inputs]
    extras = [dict(m or {}) if isinstance(m, Mapping) or m is None else m for m in metadata or ()]
    for position, doc_id in enumerate(doc_ids):  # every id and metadata before any input is read
        check_id(doc_id)
        if extras:
            check_metadata(extras[position], f"document {doc_id!r}")
    for position, value in enumerate(inputs):
        doc_id = doc_ids[position]
        try:
            items, _ = coerce_items_with_origin([value], limits)
        except InvalidInput as error:
            raise type(error)(f"document {doc_id!r}: {error.message}") from error
        yield Document(
            doc_id, kind_of_input(value), tuple(items), extras[position] if extras else {}
        )


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


__all__ = [
    "Document",
    "ImageItem",
    "documents_from_inputs",
    "documents_from_path",
    "thumbnail",
]
