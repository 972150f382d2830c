"""The store an index writes to and searches: a small interface, ONE collection layout and ONE query
builder shared by its two thin Qdrant adapters.

* a directory path → :class:`~uniembed.retrieval.edge_store.EdgeStore` (qdrant-edge-py, in process);
* ``http(s)://host:port[/collection]`` → :class:`~uniembed.retrieval.client_store.ClientStore`
  (qdrant-client: a Qdrant server or cluster; sharding and replication are Qdrant's).

Layout of one collection: a ``dense`` vector (the Matryoshka size chosen at creation, cosine, HNSW),
a ``multi`` multi-vector (dot product, MaxSim comparator, float16, HNSW off with ``m=0``: a graph
over token vectors takes hours to build and is not needed to rerank candidates), and keyword/integer
payload indexes on ``id``, ``kind``, ``page`` and the metadata fields named at creation. One point
is one entry: a text, an image or one PDF page.

The query builder turns a search mode into a :class:`Search` (which vector, which prefetch, which
filter, exact or not); the adapters only translate a :class:`Search` and its :data:`Condition` s
into their library's types, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from uniembed.errors import InvalidInput

DENSE = "dense"  # vector names in the collection
MULTI = "multi"
ENTRY_FIELDS = {"id": "keyword", "kind": "keyword", "page": "integer"}  # indexed on every index
FIELD_TYPES = ("keyword", "integer", "float", "bool")
RANGE_KEYS = ("gte", "gt", "lte", "lt")
POINT_NAMESPACE = uuid.UUID("6f6c1a4e-3d0b-4f7e-9a57-75e1e6b0c0de")  # uuid5 namespace of point ids


def point_id(doc_id: str, page: int | None) -> str:
    """The stable point id of a document's entry (its page, for PDFs): a UUID, as Qdrant wants.

    >>> point_id("report.pdf", 2) == point_id("report.pdf", 2) != point_id("report.pdf", 3)
    True
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x1f{'' if page is None else page}"))


@dataclass(frozen=True)
class Layout:
    """What a collection holds: vector sizes and the indexed payload fields (path → type)."""

    dense_dim: int
    multivector_dim: int | None  # None: single vectors only (a model without multi-vectors)
    fields: tuple[tuple[str, str], ...] = tuple(ENTRY_FIELDS.items())

    @classmethod
    def build(
        cls, dense_dim: int, multivector_dim: int | None, metadata_fields: Mapping[str, str]
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
        return cls(dense_dim, multivector_dim, tuple(ENTRY_FIELDS.items()) + extra)

    def to_json(self) -> dict[str, Any]:
        return {
            "dense_dim": self.dense_dim,
            "multivector_dim": self.multivector_dim,
            "fields": dict(self.fields),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        return cls(
            int(data["dense_dim"]), data["multivector_dim"], tuple(dict(data["fields"]).items())
        )


@dataclass(frozen=True)
class Point:
    """One entry as written: vectors as lists (qdrant-edge ingests lists far faster than arrays)."""

    id: str
    dense: list[float]
    multivector: list[list[float]] | None
    payload: dict[str, Any]


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


# ----------------------------------------------------------------- filters
@dataclass(frozen=True)
class Match:
    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAny:
    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class HasIds:
    ids: tuple[str, ...]


Condition = Match | MatchAny | Range | HasIds


def parse_filter(
    spec: Mapping[str, Any] | None, fields: Mapping[str, str] | None = None
) -> tuple[Condition, ...]:
    """A user filter (all keys must match) → conditions. Keys are ``id``, ``kind``, ``page`` or
    ``metadata.<field>`` (dotted for nested fields); values are a scalar (equal), a list (any of) or
    ``{"gte"|"gt"|"lte"|"lt": number}`` (a range). Values are checked against the field's type in
    ``fields`` (path → keyword | integer | float | bool; default: the fields of every index), so a
    filter that could never match says why instead of finding nothing.

    >>> parse_filter({"metadata.lang": "en", "page": {"gte": 2}, "id": ["a", "b"]})
    ... # doctest: +NORMALIZE_WHITESPACE
    (Match(key='metadata.lang', value='en'), Range(key='page', gte=2, gt=None, lte=None, lt=None),
     MatchAny(key='id', values=('a', 'b')))
    >>> parse_filter({"page": "3"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: filter field 'page' is an integer field: give an integer, ...
    """
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"filter must be an object of field → value, got {type(spec).__name__}")
    types = ENTRY_FIELDS if fields is None else fields
    return tuple(_condition(str(key), value, types.get(str(key))) for key, value in spec.items())


FILTER_FORMS = {  # what a filter on each field type may give
    "keyword": "a string or a list of strings",
    "integer": "an integer, a list of integers or a range",
    "float": "a range",
    "bool": "true or false",
}
KINDS = ("text", "image", "page")  # the values of ``kind``
_SEGMENT = r'(?:[\w-]+|"[^"]*")(?:\[\d{0,18}\])*'
FIELD_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")  # Qdrant's JSON paths, as both parse them
PATH_RULE = (
    'dotted names of letters, digits, _ and -, or "quoted", each optionally followed by [] (every '
    "element) or [n]"
)


def _condition(key: str, value: Any, kind: str | None) -> Condition:
    """One condition, ``value`` checked against the field type ``kind`` (``None``: undeclared)."""
    if key not in ENTRY_FIELDS and not (
        key.startswith("metadata.") and len(key) > len("metadata.")
    ):
        raise InvalidInput(f"filter field {key!r:.80}: use id, kind, page or metadata.<field>")
    _check_filter_text(key, key)
    if not FIELD_PATH.fullmatch(key):
        raise InvalidInput(f"filter field {key!r:.80} is not a valid field path: {PATH_RULE}")
    condition = _untyped_condition(key, value)
    if kind is not None and not _fits(condition, kind):
        raise InvalidInput(
            f"filter field {key!r} is {'an' if kind == 'integer' else 'a'} {kind} field: give "
            f"{FILTER_FORMS[kind]}"
        )
    if key == "kind":
        values = [condition.value] if isinstance(condition, Match) else condition.values  # type: ignore[union-attr]
        if any(v not in KINDS for v in values):
            raise InvalidInput(f"filter field 'kind': kind is one of {', '.join(KINDS)}")
    return condition


def _untyped_condition(key: str, value: Any) -> Condition:
    """The condition ``value`` asks for, each value checked for what the store can take."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(RANGE_KEYS)
        if unknown or not value or not all(_is_number(v) for v in value.values()):
            raise InvalidInput(
                f"filter field {key!r}: a range is an object of {', '.join(RANGE_KEYS)} → number"
            )
        if not all(math.isfinite(v) for v in value.values()):
            raise InvalidInput(f"filter field {key!r}: range bounds must be finite numbers")
        return Range(key, **{k: v for k, v in value.items()})
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            for v in value:
                _check_filter_text(key, v)
            return MatchAny(key, tuple(value))
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            for v in value:
                _check_filter_integer(key, v)
            return MatchAny(key, tuple(value))
        raise InvalidInput(f"filter field {key!r}: a list must hold only strings or only integers")
    if isinstance(value, str):
        _check_filter_text(key, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        _check_filter_integer(key, value)
    elif not isinstance(value, bool):
        raise InvalidInput(
            f"filter field {key!r}: expected a string, integer, boolean, list or range"
        )
    return Match(key, value)


def _fits(condition: Condition, kind: str) -> bool:
    """Whether ``condition`` can match a value of field type ``kind``."""
    if isinstance(condition, Range):
        return kind in ("integer", "float")
    values = [condition.value] if isinstance(condition, Match) else list(condition.values)  # type: ignore[union-attr]
    if kind == "keyword":
        return all(isinstance(v, str) for v in values)
    if kind == "integer":
        return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if kind == "bool":
        return isinstance(condition, Match) and isinstance(condition.value, bool)
    return False  # float: ranges only


def _check_filter_text(key: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"filter field {key!r:.80}: a lone surrogate is not valid Unicode"
        ) from None


def _check_filter_integer(key: str, value: int) -> None:
    if not -(2**63) <= value < 2**63:
        raise InvalidInput(f"filter field {key!r}: {value} is beyond a signed 64-bit integer")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Dialect(Protocol):
    """A library's constructors for filter conditions (what an adapter supplies)."""

    def match(self, key: str, value: str | int | bool) -> Any: ...
    def match_any(self, key: str, values: Sequence[str] | Sequence[int]) -> Any: ...
    def range(
        self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None
    ) -> Any: ...
    def has_ids(self, ids: Sequence[str]) -> Any: ...
    def all_of(self, conditions: list[Any]) -> Any: ...


def build_filter(conditions: Sequence[Condition], dialect: Dialect) -> Any:
    """``conditions`` in a library's types (all must hold), or ``None`` for no filter."""
    if not conditions:
        return None
    return dialect.all_of([_build_condition(condition, dialect) for condition in conditions])


def _build_condition(condition: Condition, dialect: Dialect) -> Any:
    if isinstance(condition, Match):
        return dialect.match(condition.key, condition.value)
    if isinstance(condition, MatchAny):
        return dialect.match_any(condition.key, list(condition.values))
    if isinstance(condition, Range):
        return dialect.range(
            condition.key, condition.gte, condition.gt, condition.lte, condition.lt
        )
    return dialect.has_ids(list(condition.ids))


# ----------------------------------------------------------------- searches
@dataclass(frozen=True)
class Stage:
    """Score points by one vector: ``using`` names it, ``vector`` is a list (dense) or a list of
    lists (multi-vector); the ``limit`` best go on."""

    using: Literal["dense", "multi"]
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
    embedded: bool  # in this process (exact scans may then run on an in-memory copy)

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


@dataclass
class StoreLocation:
    """Where an index lives: a directory, or a Qdrant URL with its collection."""

    path: Path | None = None
    url: str | None = None
    collection: str = "uniembed"

    @classmethod
    def parse(cls, location: str | Path) -> StoreLocation:
        """A path, or ``http(s)://host:port[/collection]`` (default collection ``uniembed``).

        >>> StoreLocation.parse("http://qdrant:6333/pages").url, StoreLocation.parse("http://q:6333/pages").collection
        ('http://qdrant:6333', 'pages')
        >>> StoreLocation.parse("/data/index").path
        PosixPath('/data/index')
        """
        text = str(location)
        if text.startswith(("http://", "https://")):
            scheme, rest = text.split("://", 1)
            host, _, path = rest.partition("/")
            collection = path.strip("/") or "uniembed"
            if "/" in collection:
                raise InvalidInput(f"index URL {text!r}: give http(s)://host:port/collection")
            return cls(url=f"{scheme}://{host}", collection=collection)
        return cls(path=Path(text).expanduser())


def create_store(location: str | Path, layout: Layout, manifest: Mapping[str, Any]) -> Store:
    """Create an empty index store at ``location`` (a directory or a Qdrant URL)."""
    where = StoreLocation.parse(location)
    if where.path is not None:
        from uniembed.retrieval.edge_store import EdgeStore

        return EdgeStore.create(where.path, layout, manifest)
    from uniembed.retrieval.client_store import ClientStore

    return ClientStore.create(ClientStore.connect(where.url), where.collection, layout, manifest)


def open_store(location: str | Path) -> Store:
    """Open the index store at ``location``; raises :class:`InvalidInput` when there is none."""
    where = StoreLocation.parse(location)
    if where.path is not None:
        from uniembed.retrieval.edge_store import EdgeStore

        return EdgeStore.open(where.path)
    from uniembed.retrieval.client_store import ClientStore

    return ClientStore.open(ClientStore.connect(where.url), where.collection)


def store_exists(location: str | Path) -> bool:
    """Whether an index already lives at ``location``."""
    where = StoreLocation.parse(location)
    if where.path is not None:
        from uniembed.retrieval.edge_store import EdgeStore

        return EdgeStore.exists(where.path)
    from uniembed.retrieval.client_store import ClientStore

    return ClientStore.connect(where.url).collection_exists(where.collection)
