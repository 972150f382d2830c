"""Relevance judgements and the BEIR layout, read and checked once for evaluation and training.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/{split}.tsv`` (header ``query-id corpus-id score``). Every reader of
judgements goes through :class:`QrelsBuilder` and :func:`unique_ids`, so bad input gets the same
messages, naming the file and line (or row) at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from uniembed.core.files import read_jsonl
from uniembed.errors import InvalidInput

Qrels = dict[str, dict[str, int]]
T = TypeVar("T")
BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder's judged queries and corpus, in file order, and the judgements."""

    query_ids: list[str]
    queries: list[str]
    corpus_ids: list[str]
    corpus: list[str]
    qrels: Qrels
    skipped_queries: int  # queries without a judgement, left out


def read_beir(path: Path, split: str = "test") -> BeirDataset:
    """A BEIR folder, checked: unique ids, judgements naming known items only, at least one; the
    queries without a judgement are left out (counted); documents are ``title + " " + text``."""
    corpus_rows = [
        (
            as_id(record.get("_id"), where, "_id"),
            document_text(record.get("title"), text_field(record, "text", where)),
            where,
        )
        for where, record in read_jsonl(path / "corpus.jsonl")
    ]
    query_rows = [
        (as_id(record.get("_id"), where, "_id"), text_field(record, "text", where), where)
        for where, record in read_jsonl(path / "queries.jsonl")
    ]
    corpus_ids = unique_ids(
        ((i, w) for i, _, w in corpus_rows), f"corpus ({path / 'corpus.jsonl'})"
    )
    query_ids = unique_ids(
        ((i, w) for i, _, w in query_rows), f"query set ({path / 'queries.jsonl'})"
    )
    qrels = _read_qrels(path / "qrels", split, query_ids, corpus_ids)
    ids, queries, skipped = judged_queries(query_ids, [text for _, text, _ in query_rows], qrels)
    return BeirDataset(
        ids,
        queries,
        corpus_ids,
        [text for _, text, _ in corpus_rows],
        qrels,
        skipped,
    )


def _read_qrels(folder: Path, split: str, query_ids: list[str], corpus_ids: list[str]) -> dict:
    file = folder / f"{split}.tsv"
    if not file.is_file():
        found = sorted(p.stem for p in folder.glob("*.tsv"))
        raise InvalidInput(
            f"{file}: no qrels for split {split!r} (found: {', '.join(found) or 'none'})"
        )
    builder = QrelsBuilder(query_ids, corpus_ids, str(file))
    with file.open(encoding="utf-8") as lines:
        header = next(lines, "").rstrip("\r\n").split("\t")
        if [column.strip() for column in header] != list(BEIR_QRELS_HEADER):
            raise InvalidInput(
                f"{file}:1: expected the header line 'query-id<TAB>corpus-id<TAB>score' "
                f"(BEIR skips the first line), got {header!r}"
            )
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            where = f"{file}:{number}"
            if len(fields) != 3:
                raise InvalidInput(f"{where}: expected 3 tab-separated fields, got {len(fields)}")
            builder.add(fields[0], fields[1], fields[2], where)
    return builder.build()


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
    query_ids: Sequence[str], queries: Sequence[T], qrels: Qrels
) -> tuple[list[str], list[T], int]:
    """Keep the queries that have judgements, in their order; also return how many were dropped."""
    keep = [i for i, query_id in enumerate(query_ids) if query_id in qrels]
    return [query_ids[i] for i in keep], [queries[i] for i in keep], len(query_ids) - len(keep)


def text_field(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def document_text(title: Any, text: str) -> str:
    """BEIR's and MTEB's document text: the title, a space and the text (no title: the text).

    >>> document_text("Solar", "Panels convert light."), document_text("", "Only text.")
    ('Solar Panels convert light.', 'Only text.')
    """
    return f"{title} {text}".strip() if isinstance(title, str) and title else text
