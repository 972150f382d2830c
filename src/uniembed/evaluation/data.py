"""A retrieval dataset in memory: queries, a corpus and relevance judgements (qrels).

Items are kept in the form :meth:`uniembed.embedder.Embedder.encode` takes — a string, a
``{"text"}`` / ``{"image": path | bytes}`` dict — or as a :class:`PdfPage`, rendered only when it is
encoded. Readers (:mod:`uniembed.evaluation.readers`) build datasets through :class:`QrelsBuilder`
and :func:`unique_ids`, so every reader refuses bad input with the same messages, naming the file
and line (or row) at fault.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput

Qrels = dict[str, dict[str, int]]


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


def unique_ids(ids: Iterable[tuple[str, str]], what: str) -> list[str]:
    """Ids in order from ``(id, where)`` pairs; a repeated id or no id at all is an error.

    >>> unique_ids([("a", "f:1"), ("b", "f:2")], "corpus")
    ['a', 'b']
    >>> unique_ids([("a", "f:1"), ("a", "f:3")], "corpus")
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: f:3: corpus id 'a' appears twice (first at f:1)
    """
    seen: dict[str, str] = {}
    for item_id, where in ids:
        if item_id in seen:
            raise InvalidInput(
                f"{where}: {what} id {item_id!r} appears twice (first at {seen[item_id]})"
            )
        seen[item_id] = where
    if not seen:
        raise InvalidInput(f"the {what} is empty")
    return list(seen)


def as_id(value: Any, where: str, key: str) -> str:
    """An id field as a string (BEIR files hold numbers as ids too); missing or empty is an error.

    >>> as_id(12, "f:1", "_id")
    '12'
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InvalidInput(f"{where}: {key!r} must be a non-empty string or integer, got {value!r}")
    return str(value)


class QrelsBuilder:
    """Collects judgements, refusing any that name an unknown query or corpus item."""

    def __init__(self, query_ids: Iterable[str], corpus_ids: Iterable[str], source: str) -> None:
        self.queries = set(query_ids)
        self.corpus = set(corpus_ids)
        self.source = source
        self.qrels: Qrels = {}

    def add(self, query_id: str, doc_id: str, score: Any, where: str) -> None:
        if query_id not in self.queries:
            raise InvalidInput(f"{where}: query id {query_id!r} is not among the queries")
        if doc_id not in self.corpus:
            hint = _page_hint(doc_id, self.corpus)
            raise InvalidInput(f"{where}: corpus id {doc_id!r} is not in the corpus{hint}")
        grade = _grade(score, where)
        self.qrels.setdefault(query_id, {})[doc_id] = grade

    def build(self) -> Qrels:
        if not self.qrels:
            raise InvalidInput(f"{self.source}: no relevance judgements")
        return self.qrels


def _grade(score: Any, where: str) -> int:
    """A relevance grade: an integer (also as text or a float with no fraction), as BEIR reads it.

    >>> _grade("2", "f:1"), _grade(1.0, "f:1")
    (2, 1)
    """
    if isinstance(score, bool):
        raise InvalidInput(f"{where}: score must be an integer, got {score!r}")
    if isinstance(score, float) and score.is_integer():
        return int(score)
    try:
        return int(score)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: score must be an integer, got {score!r}") from None


def _page_hint(doc_id: str, corpus: set[str]) -> str:
    first = f"{doc_id}#p1"
    return f" (it is a PDF: name its pages, e.g. {first!r})" if first in corpus else ""


def judged_queries(
    query_ids: Sequence[str], queries: Sequence[EvalItem], qrels: Qrels
) -> tuple[list[str], list[EvalItem], int]:
    """Keep the queries that have judgements, in their order; also return how many were dropped."""
    keep = [i for i, query_id in enumerate(query_ids) if query_id in qrels]
    return [query_ids[i] for i in keep], [queries[i] for i in keep], len(query_ids) - len(keep)


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
