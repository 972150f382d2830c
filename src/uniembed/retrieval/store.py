"""The store an index writes to and searches: a small interface (:class:`Store`, which knows no
implementation), ONE collection layout and ONE query builder shared by its two thin Qdrant adapters
(:mod:`~uniembed.retrieval.edge_store`, :mod:`~uniembed.retrieval.client_store`); which adapter a
location gets is :mod:`~uniembed.retrieval.stores`' choice, filters are
:mod:`~uniembed.retrieval.filters`'.

Layout of one collection: a ``dense`` vector (the Matryoshka size chosen at creation, cosine, HNSW),
optionally a ``muvera`` vector (the MUVERA encoding of the entry's multi-vector, dot product,
float16, HNSW: the first stage built from the multi-vectors), and keyword/integer payload indexes on
``id``, ``kind``, ``page`` and the metadata fields named at creation. One point is one entry: a
text, an image or one PDF page. Where the multi-vectors live is the store's: an embedded store
keeps them beside the collection in the index's own memory-mapped files
(:mod:`~uniembed.retrieval.token_files`, in the layout's ``codecs``; each point's payload names
its ``row`` there); a Qdrant server keeps them in a ``multi`` multi-vector (dot product, MaxSim
comparator, float16 on disk, HNSW off with ``m=0``: a graph over token vectors takes hours to
build and is not needed to rerank), quantized by Qdrant as the first codec says.

The query builder turns a search mode into a :class:`Search` (which vector, which prefetch, which
filter, exact or not); the adapters only translate a :class:`Search` and its
:data:`~uniembed.retrieval.filters.Condition` s into their library's types, so the two cannot drift
apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from uniembed.errors import InvalidInput
from uniembed.retrieval.filters import (
    ENTRY_FIELDS,
    FIELD_PATH,
    FIELD_TYPES,
    PATH_RULE,
    Condition,
    HasIds,
)

DENSE = "dense"  # vector names in the collection
MULTI = "multi"
MUVERA = "muvera"
QDRANT_MULTIVECTOR_FLOATS = 1_048_576  # Qdrant refuses multi-vectors of this many floats or more
POINT_NAMESPACE = uuid.UUID("6f6c1a4e-3d0b-4f7e-9a57-75e1e6b0c0de")  # uuid5 namespace of point ids


def point_id(doc_id: str, page: int | None) -> str:
    """The stable point id of a document's entry (its page, for PDFs): a UUID, as Qdrant wants.

    >>> point_id("report.pdf", 2) == point_id("report.pdf", 2) != point_id("report.pdf", 3)
    True
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x1f{'' if page is None else page}"))


def max_rows_for(dim: int, limit_floats: int = QDRANT_MULTIVECTOR_FLOATS) -> int:
    """Most rows of ``dim`` floats a multi-vector may have under a backend's float limit.

    >>> max_rows_for(128)
    8191
    """
    return (limit_floats - 1) // dim


def float16_lists(rows: torch.Tensor) -> list[list[float]]:
    """float16 rows as lists of floats (what a store ingests), converted on one thread."""
    return rows.numpy().astype(np.float32).tolist()


@dataclass(frozen=True)
class Layout:
    """What a collection holds: vector sizes and the indexed payload fields (path → type)."""

    dense_dim: int
    multivector_dim: int | None  # None: single vectors only (a model without multi-vectors)
    fields: tuple[tuple[str, str], ...] = tuple(ENTRY_FIELDS.items())
    muvera: tuple[int, int, int] | None = None  # MUVERA (simhash bits, projection, repetitions)
    codecs: tuple[str, ...] = ("float16",)  # of the multi-vectors; the first is what scans read

    @property
    def muvera_dim(self) -> int | None:
        """Values of one MUVERA encoding (None: the collection keeps none)."""
        if self.muvera is None:
            return None
        bits, projection, repetitions = self.muvera
        return repetitions * 2**bits * projection

    @classmethod
    def build(
        cls,
        dense_dim: int,
        multivector_dim: int | None,
        metadata_fields: Mapping[str, str],
        muvera: tuple[int, int, int] | None = None,
        codecs: Sequence[str] = ("float16",),
    ) -> Layout:
        """The layout with ``metadata_fields`` (name → keyword | integer | float | bool) indexed."""
        for name, kind in metadata_fields.items():
            if not isinstance(name, str) or not FIELD_PATH.fullmatch(name):
                raise InvalidInput(f"metadata field {name!r:.80}: {PATH_RULE}")
            if kind not in FIELD_TYPES:
                raise InvalidInput(
                    f"metadata field {name!r}: type {kind!r} is not one of {', '.join(FIELD_TYPES)}"
                )
        extra = tuple((f"metadata.{name}", kind) for name, kind in metadata_fields.items())
        fields = tuple(ENTRY_FIELDS.items()) + extra
        return cls(dense_dim, multivector_dim, fields, muvera, tuple(codecs))

    def to_json(self) -> dict[str, Any]:
        return {
            "dense_dim": self.dense_dim,
            "multivector_dim": self.multivector_dim,
            "fields": dict(self.fields),
            "muvera": self.muvera,
            "codecs": list(self.codecs),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        return cls(
            int(data["dense_dim"]),
            data["multivector_dim"],
            tuple(dict(data["fields"]).items()),
            None if data.get("muvera") is None else tuple(data["muvera"]),
            tuple(data.get("codecs", ("float16",))),
        )


@dataclass(frozen=True)
class Point:
    """One entry as written: vectors as lists (qdrant-edge ingests lists far faster than arrays)."""

    id: str
    dense: list[float]
    multivector: list[list[float]] | None  # for a store that keeps multi-vectors itself
    payload: dict[str, Any]
    muvera: list[float] | None = None


@dataclass(frozen=True)
class Found:
    """A point read back: its score (searches only), payload and, when asked, its multi-vector."""

    id: str
    payload: dict[str, Any]
    score: float = 0.0
    multivector: torch.Tensor | None = None  # (rows, dim) float32, as stored (float16 values)


def point_vectors(point: Point) -> dict[str, Any]:
    """A point's named vectors, as both Qdrant libraries take them."""
    vectors: dict[str, Any] = {DENSE: point.dense}
    if point.multivector is not None:
        vectors[MULTI] = point.multivector
    if point.muvera is not None:
        vectors[MUVERA] = point.muvera
    return vectors


def found_from(record: Any) -> Found:
    """A scored point or record of either Qdrant library (``id``, ``payload``, ``vector``,
    score)."""
    vectors = record.vector if isinstance(record.vector, dict) else {}
    multivector = vectors.get(MULTI)
    return Found(
        id=str(record.id),
        payload=record.payload or {},
        score=float(getattr(record, "score", None) or 0.0),
        multivector=None
        if multivector is None
        else torch.from_numpy(np.array(multivector, dtype=np.float32)),
    )


# ----------------------------------------------------------------- searches
@dataclass(frozen=True)
class Stage:
    """Score points by one vector: ``using`` names it, ``vector`` is a list (dense) or a list of
    lists (multi-vector); the ``limit`` best go on."""

    using: Literal["dense", "multi", "muvera"]
    vector: list[float] | list[list[float]]
    limit: int


@dataclass(frozen=True)
class Search:
    """One store query: an optional candidate stage (``prefetch``), then the scoring stage; the
    filter applies to both."""

    stage: Stage
    prefetch: Stage | None = None
    conditions: tuple[Condition, ...] = ()
    exact: bool = False  # full scan instead of the vector's index
    with_multivector: bool = False
    payload: bool | Sequence[str] = True  # all, none, or these payload fields


def dense_search(
    vector: list[float], k: int, conditions: tuple[Condition, ...] = (), **read: Any
) -> Search:
    """Cosine on the dense vector (HNSW)."""
    return Search(Stage(DENSE, vector, k), conditions=conditions, **read)


def muvera_search(
    vector: list[float], k: int, conditions: tuple[Condition, ...] = (), **read: Any
) -> Search:
    """Dot product of MUVERA encodings (HNSW): candidates for a MaxSim rerank."""
    return Search(Stage(MUVERA, vector, k), conditions=conditions, **read)


def multivector_search(
    multivector: list[list[float]], k: int, conditions: tuple[Condition, ...] = (), **read: Any
) -> Search:
    """Exact MaxSim over every (filtered) point."""
    return Search(Stage(MULTI, multivector, k), conditions=conditions, exact=True, **read)


def two_stage_search(
    vector: list[float],
    multivector: list[list[float]],
    k: int,
    candidates: int,
    conditions: tuple[Condition, ...] = (),
    **read: Any,
) -> Search:
    """One query: the ``candidates`` best by dense cosine, reranked by MaxSim."""
    prefetch = Stage(DENSE, vector, max(candidates, k))
    return Search(Stage(MULTI, multivector, k), prefetch=prefetch, conditions=conditions, **read)


def rerank_search(
    multivector: list[list[float]], ids: Sequence[str], k: int, **read: Any
) -> Search:
    """Exact MaxSim over the points ``ids`` only (the float rerank after a binary first stage)."""
    return Search(
        Stage(MULTI, multivector, k), conditions=(HasIds(tuple(ids)),), exact=True, **read
    )


# ----------------------------------------------------------------- the interface
class Store(Protocol):
    """What an index needs from a vector database (PyLate-sized: write, delete, search, read)."""

    layout: Layout
    embedded: bool  # in this process
    files: Path | None  # the index's own files beside the store (its token vectors); None: none

    def manifest(self) -> dict[str, Any]:
        """The index manifest written at creation."""
        ...

    def upsert(self, points: Sequence[Point]) -> None:
        """Write ``points`` as ONE operation: after a crash all of them are there or none."""
        ...

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove every entry (all pages) of the documents ``doc_ids`` as one operation."""
        ...

    def search(self, search: Search) -> list[Found]:
        """Run one query; best first."""
        ...

    def set_payloads(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge each point's new payload values into its payload (point id -> values)."""
        ...

    def count(self, conditions: tuple[Condition, ...] = ()) -> int:
        """Entries matching ``conditions``."""
        ...

    def scroll(
        self,
        conditions: tuple[Condition, ...] = (),
        *,
        payload: bool | Sequence[str] = True,
        with_multivector: bool = False,
        page_size: int = 256,
    ) -> Iterator[Found]:
        """Every matching entry, page by page (``payload``: all, none, or these fields)."""
        ...

    def optimize(self) -> None:
        """Build the vector indexes for what was written (a no-op where the server does it)."""
        ...

    def close(self) -> None: ...
