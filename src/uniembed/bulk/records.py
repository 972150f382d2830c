"""Reading bulk inputs: records (an id and a raw input) from text files, JSONL files and folders."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
PDF_SUFFIXES = frozenset({".pdf"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md"})  # text files picked up inside folders


@dataclass(frozen=True)
class Record:
    """One input as read from disk: an id and what to embed, or why it cannot be embedded.

    ``raw`` is a text or a ``{"image": …}`` / ``{"pdf": …}`` dict as
    :func:`uniembed.inputs.parse.coerce_items` accepts it (a local file is a :class:`Path`, read
    when the record is parsed). A PDF yields one item per page, with ids ``<id>#page=N`` (N from 1).
    """

    id: str
    raw: Any = None
    error: str | None = None
    metadata: dict[str, Any] | None = None  # JSONL ``metadata`` (kept with ``--vectors both``)

    @property
    def is_pdf(self) -> bool:
        return isinstance(self.raw, dict) and "pdf" in self.raw


@dataclass(frozen=True)
class ReadOptions:
    """How files become records."""

    whole_file: bool = False  # a text file is one item instead of one item per line
    id_key: str = "id"  # JSONL: field holding the id
    text_key: str = "text"  # JSONL: field holding the text


def iter_records(paths: Iterable[Path], options: ReadOptions = ReadOptions()) -> Iterator[Record]:
    """Records of files and folders, in order; folders are walked in sorted order.

    Ids: ``<file>:<line>`` for lines of text files, ``<file>`` for whole text files, images and
    (before the page suffix) PDFs, the ``id_key`` value for JSONL lines. A file given directly is
    named as given; a file found in a folder by its path relative to that folder.
    """
    for path in paths:
        if path.is_dir():
            for file in _folder_files(path):
                yield from _file_records(file, file.relative_to(path).as_posix(), options)
        elif path.is_file():
            yield from _file_records(path, path.as_posix(), options)
        else:
            raise InvalidInput(f"input {path} is neither a file nor a folder")


def _folder_files(folder: Path) -> list[Path]:
    known = IMAGE_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES | TEXT_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in known)


def _file_records(path: Path, name: str, options: ReadOptions) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        yield Record(name, {"image": path})
    elif suffix in PDF_SUFFIXES:
        yield Record(name, {"pdf": path})
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_records(path, name, options)
    elif options.whole_file:
        yield _whole_text_record(path, name)
    else:
        yield from _line_records(path, name)


def _whole_text_record(path: Path, name: str) -> Record:
    try:
        return _text_record(name, path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return Record(name, error=f"not UTF-8 text: {exc}")


def _line_records(path: Path, name: str) -> Iterator[Record]:
    number = 0
    try:
        with path.open(encoding="utf-8", newline=None) as lines:
            for number, line in enumerate(lines, 1):
                yield _text_record(f"{name}:{number}", line.rstrip("\n"))
    except UnicodeDecodeError as exc:
        yield Record(f"{name}:{number + 1}", error=f"not UTF-8 text from here on: {exc}")


def _text_record(record_id: str, text: str) -> Record:
    if not text.strip():
        return Record(record_id, error="empty text")
    return Record(record_id, text)


def _jsonl_records(path: Path, name: str, options: ReadOptions) -> Iterator[Record]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield _jsonl_record(line, f"{name}:{number}", path.parent, options)


def _jsonl_record(line: str, where: str, base: Path, options: ReadOptions) -> Record:
    """One JSONL object → a record; errors are reported under ``<file>:<line>`` when there is no
    id."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(where, error=f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Record(where, error=f"expected a JSON object, got {type(obj).__name__}")
    if obj.get(options.id_key) is None:
        return Record(where, error=f"no {options.id_key!r} field (set the id field with --id-key)")
    record_id = str(obj[options.id_key])
    kinds = [k for k in (options.text_key, "image", "pdf") if obj.get(k) is not None]
    if len(kinds) != 1:
        wanted = f"{options.text_key!r}, 'image' or 'pdf'"
        return Record(record_id, error=f"expected exactly one of {wanted}, found {len(kinds)}")
    value = obj[kinds[0]]
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return Record(record_id, error="'metadata' must be a JSON object")
    if kinds[0] == options.text_key:
        if not isinstance(value, str):
            return Record(record_id, error=f"{options.text_key!r} must be a string")
        return replace(_text_record(record_id, value), metadata=metadata)
    return Record(record_id, {kinds[0]: _local_or_raw(value, base)}, metadata=metadata)


def _local_or_raw(value: Any, base: Path) -> Any:
    """A file path (relative to the JSONL file, or absolute) becomes a :class:`Path`; URLs, base64
    and data URIs pass through."""
    if isinstance(value, str) and "://" not in value and not value.startswith("data:"):
        from uniembed.inputs.images import is_existing_file

        if is_existing_file(str(base / value)):
            return base / value
    return value


def count_records(paths: Iterable[Path], options: ReadOptions = ReadOptions()) -> int:
    """How many records :func:`iter_records` will yield (a progress bar's total), without
    parsing."""
    total = 0
    for path in paths:
        files = _folder_files(path) if path.is_dir() else [path]
        total += sum(_count_file(file, options) for file in files)
    return total


def count_items(paths: Iterable[Path], options: ReadOptions = ReadOptions()) -> int:
    """How many items a job over ``paths`` embeds (a progress bar's total): the records, with each
    PDF file counted as its pages (read from the file, not rendered; an unreadable one counts 1,
    as it fails as one item). A PDF named in a JSONL line counts 1."""
    total = 0
    for path in paths:
        for file in _folder_files(path) if path.is_dir() else [path]:
            pdf = file.suffix.lower() in PDF_SUFFIXES
            total += _pdf_pages(file) if pdf else _count_file(file, options)
    return total


def _pdf_pages(path: Path) -> int:
    from uniembed.errors import UniembedError
    from uniembed.inputs.pdf import pdf_page_count  # local: pdfium loads only when counting

    try:
        return max(pdf_page_count(path.read_bytes(), str(path)), 1)
    except (OSError, UniembedError):
        return 1


def _count_file(path: Path, options: ReadOptions) -> int:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES | PDF_SUFFIXES or (
        options.whole_file and suffix not in JSONL_SUFFIXES
    ):
        return 1
    with path.open("rb") as lines:
        if suffix in JSONL_SUFFIXES:
            return sum(1 for line in lines if line.strip())
        return sum(1 for _ in lines)
