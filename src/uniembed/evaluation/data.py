"""A retrieval dataset in memory: queries, a corpus and relevance judgements (qrels).

Items are kept in the form :meth:`uniembed.embedder.Embedder.encode` takes — a string, a
``{"text"}`` / ``{"image": path | bytes}`` dict — or as a :class:`PdfPage`, rendered only when it is
encoded. Readers (:mod:`uniembed.evaluation.readers`) build datasets through
:class:`uniembed.core.beir.QrelsBuilder` and :func:`~uniembed.core.beir.unique_ids`, so every reader
refuses bad input with the same messages, naming the file and line (or row) at fault.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniembed.core.beir import Qrels


@dataclass(frozen=True)
class PdfPage:
    """Page ``number`` (1-based) of the PDF at ``path``; corpus id ``<pdf id>#p<number>``."""

    path: Path
    number: int


EvalItem = str | dict[str, Any] | PdfPage


@dataclass(frozen=True)
class RetrievalDataset:
    """Queries and corpus items with their ids, and the judgements ``qrels[query][doc] = grade``.

    Only queries with at least one judgement are kept (``skipped_queries`` counts the others), as
    BEIR and MTEB evaluate only judged queries.
    """

    name: str
    query_ids: list[str]
    queries: Sequence[EvalItem]
    corpus_ids: list[str]
    corpus: Sequence[EvalItem]
    qrels: Qrels
    skipped_queries: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for reports."""
        judgements = sum(len(docs) for docs in self.qrels.values())
        return {
            "name": self.name,
            "queries": len(self.query_ids),
            "corpus": len(self.corpus_ids),
            "judgements": judgements,
            "skipped_queries": self.skipped_queries,
            **self.details,
        }


# --------------------------------------------------------------------- fingerprints
def fingerprint(ids: Sequence[str], items: Iterable[EvalItem]) -> str:
    """A digest of ids and item contents: the cache key of an encoding of these items.

    Texts and image bytes are hashed; files by path, size and modification time (so a changed
    file is encoded again without reading every file on each run).

    >>> fingerprint(["a"], ["x"]) == fingerprint(["a"], ["x"])
    True
    >>> fingerprint(["a"], ["x"]) == fingerprint(["a"], ["y"])
    False
    """
    digest = hashlib.blake2b(digest_size=16)
    for item_id, item in zip(ids, items, strict=True):
        digest.update(item_id.encode() + b"\0")
        for part in _content_parts(item):
            digest.update(part)
        digest.update(b"\1")
    return digest.hexdigest()


def _content_parts(item: EvalItem) -> Iterable[bytes]:
    if isinstance(item, str):
        return (b"text", item.encode())
    if isinstance(item, PdfPage):
        return (b"pdf", _file_stamp(item.path), str(item.number).encode())
    if "text" in item:
        return (b"text", item["text"].encode())
    value = item["image"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (b"image-bytes", bytes(value))
    return (b"image-file", _file_stamp(Path(value)))


def _file_stamp(path: Path) -> bytes:
    stat = os.stat(path)
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()


# --------------------------------------------------------------------- encoding inputs
def encode_input(item: EvalItem) -> Any:
    """What to pass to ``Embedder.encode`` for ``item`` (a PDF page is rendered here)."""
    if isinstance(item, PdfPage):
        pages = _rendered_pdf(item.path, os.stat(item.path).st_mtime_ns)
        return pages[item.number - 1]
    return item


@functools.lru_cache(maxsize=1)
def _rendered_pdf(path: Path, mtime_ns: int) -> list[Any]:
    """Every page of one PDF, kept while its pages are encoded (they come in order)."""
    from uniembed.inputs.pdf import render_pdf

    return render_pdf(path.read_bytes(), source=str(path))
