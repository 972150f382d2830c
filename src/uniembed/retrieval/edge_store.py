"""The embedded store: a qdrant-edge shard in a directory (``<dir>/shard``) beside the index
manifest (``<dir>/uniembed-index.json``).

A thin adapter: the layout, searches and filters come from :mod:`uniembed.retrieval.store`; this
module only says them in qdrant-edge's types (pinned to qdrant-edge-py 0.9.0: its API is beta).

Safety: every :meth:`EdgeStore.upsert` and :meth:`EdgeStore.delete` is one shard update, i.e. one
write-ahead-log record, so a killed process leaves each of them applied whole or not at all. The
directory is created under a temporary name and renamed into place once complete. qdrant-edge locks
its WAL, so a second process cannot open the same index while one has it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniembed._optional import require
from uniembed.core.files import write_text
from uniembed.errors import InvalidInput, UniembedError
from uniembed.retrieval.filters import Condition, MatchAny, build_filter
from uniembed.retrieval.store import (
    DENSE,
    MUVERA,
    Found,
    Layout,
    Point,
    Search,
    Stage,
    found_from,
    point_vectors,
)

MANIFEST = "uniembed-index.json"
SHARD = "shard"
TOKENS = "tokens"  # the token vectors (uniembed.retrieval.token_files), not in the shard


def _edge() -> Any:
    return require("qdrant_edge", "search", "the embedded index (qdrant-edge)")


class EdgeDialect:
    """Filter conditions in qdrant-edge's types."""

    def __init__(self) -> None:
        self.q = _edge()

    def match(self, key: str, value: str | int | bool) -> Any:
        if isinstance(value, bool):  # qdrant-edge reads a Python bool as the integer 1 or 0;
            value = np.bool_(value)  # numpy's bool is no int, so it arrives as a bool
        return self.q.FieldCondition(key=key, match=self.q.MatchValue(value))

    def match_any(self, key: str, values: Sequence[str] | Sequence[int]) -> Any:
        return self.q.FieldCondition(key=key, match=self.q.MatchAny(list(values)))

    def range(
        self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None
    ) -> Any:
        return self.q.FieldCondition(
            key=key, range=self.q.RangeFloat(gte=gte, gt=gt, lte=lte, lt=lt)
        )

    def has_ids(self, ids: Sequence[str]) -> Any:
        return self.q.HasIdCondition(set(ids))

    def all_of(self, conditions: list[Any]) -> Any:
        return self.q.Filter(must=conditions)


class EdgeStore:
    """An index store in a local directory (see the module docstring)."""

    embedded = True

    def __init__(self, shard: Any, path: Path, manifest: dict[str, Any]) -> None:
        self._shard = shard
        self._q = _edge()
        self._dialect = EdgeDialect()
        self.path = path
        self.files = path / TOKENS
        self._manifest = manifest
        self.layout = Layout.from_json(manifest["layout"])

    # ----------------------------------------------------------------- lifecycle
    @staticmethod
    def exists(path: Path) -> bool:
        return (path / MANIFEST).is_file()

    @classmethod
    def create(cls, path: Path, layout: Layout, manifest: Mapping[str, Any]) -> EdgeStore:
        """Build the shard and manifest under a temporary name, then rename it to ``path``."""
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(
                f"{path} exists and is not an empty directory; pick another index path"
            )
        q = _edge()
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
        try:
            shard = q.EdgeShard.create(
                str(staging / SHARD), q.EdgeConfig(vectors=_vector_params(q, layout))
            )
            for name, kind in layout.fields:
                shard.update(q.UpdateOperation.create_field_index(name, _schema(q, kind)))
            shard.flush()
            shard.close()
            write_text(
                staging / MANIFEST,
                json.dumps({**manifest, "layout": layout.to_json()}, indent=2, sort_keys=True),
                durable=True,
            )
            if path.exists():
                path.rmdir()
            os.rename(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> EdgeStore:
        if not cls.exists(path):
            raise InvalidInput(f"no index at {path} (no {MANIFEST}); create one first")
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            Layout.from_json(manifest["layout"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise UniembedError(
                f"could not open the index at {path}: its manifest {path / MANIFEST} is unreadable "
                f"({type(error).__name__}: {error}). Restore {path} from a backup or rebuild it "
                "(uniembed index)"
            ) from error
        try:
            shard = _edge().EdgeShard.load(str(path / SHARD))
        except Exception as error:  # qdrant-edge raises plain exceptions
            raise UniembedError(_open_failure(path, error)) from error
        return cls(shard, path, manifest)

    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    def close(self) -> None:
        self._shard.close()

    def optimize(self) -> None:
        self._shard.optimize()

    # ----------------------------------------------------------------- writes
    def upsert(self, points: Sequence[Point]) -> None:
        q = self._q
        try:  # a value qdrant-edge cannot convert fails here, before the shard is touched
            operation = q.UpdateOperation.upsert_points(
                [q.Point(p.id, point_vectors(p), p.payload) for p in points]
            )
        except (TypeError, ValueError, OverflowError) as error:
            raise InvalidInput(f"the store cannot keep this entry: {error}") from error
        self._shard.update(operation)

    def delete(self, doc_ids: Sequence[str]) -> None:
        condition = build_filter((MatchAny("id", tuple(doc_ids)),), self._dialect)
        self._shard.update(self._q.UpdateOperation.delete_points_by_filter(condition))

    def set_payloads(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        for point, values in updates.items():  # qdrant-edge sets one payload per operation
            self._shard.update(self._q.UpdateOperation.set_payload([point], dict(values)))

    # ----------------------------------------------------------------- reads
    def search(self, search: Search) -> list[Found]:
        q = self._q
        condition = build_filter(search.conditions, self._dialect)
        prefetches = None
        if search.prefetch is not None:
            prefetches = [
                q.Prefetch(
                    limit=search.prefetch.limit,
                    query=self._nearest(search.prefetch),
                    filter=condition,
                )
            ]
        request = q.QueryRequest(
            limit=search.stage.limit,
            query=self._nearest(search.stage),
            prefetches=prefetches,
            filter=condition,
            params=q.SearchParams(exact=search.exact),
            with_payload=self._payload(search.payload),
            with_vector=False,  # multi-vectors are in the token files
        )
        return [found_from(point) for point in self._shard.query(request)]

    def count(self, conditions: tuple[Condition, ...] = ()) -> int:
        return self._shard.count(
            self._q.CountRequest(exact=True, filter=build_filter(conditions, self._dialect))
        )

    def scroll(
        self,
        conditions: tuple[Condition, ...] = (),
        *,
        payload: bool | Sequence[str] = True,
        with_multivector: bool = False,
        page_size: int = 256,
    ) -> Iterator[Found]:
        condition = build_filter(conditions, self._dialect)
        with_payload = self._payload(payload)
        offset = None
        while True:
            request = self._q.ScrollRequest(
                offset=offset,
                limit=page_size,
                filter=condition,
                with_payload=with_payload,
                with_vector=False,
            )
            records, offset = self._shard.scroll(request)
            yield from (found_from(record) for record in records)
            if offset is None:
                return

    # ----------------------------------------------------------------- helpers
    def _nearest(self, stage: Stage) -> Any:
        return self._q.Query.Nearest(stage.vector, using=stage.using)

    def _payload(self, payload: bool | Sequence[str]) -> Any:
        return (
            payload if isinstance(payload, bool) else self._q.PayloadSelector.Include(list(payload))
        )


def _open_failure(path: Path, error: Exception) -> str:
    """Why the shard at ``path`` did not open, and what to do about it."""
    if "WouldBlock" in str(error):
        return f"the index at {path} is already open (by this or another process)"
    if "WAL" in str(error):
        return (
            f"could not open the index at {path}: its write-ahead log is unreadable ({error}). "
            f"To recover, restore {path} from a backup or rebuild it (uniembed index), or move "
            f"{path / SHARD / 'wal'} aside: the index then opens with what was flushed before "
            "(writes since the last flush are lost)"
        )
    return (
        f"could not open the index at {path}: {error}. Restore it from a backup or rebuild it "
        "(uniembed index)"
    )


def _vector_params(q: Any, layout: Layout) -> dict[str, Any]:
    """The shard's vectors: multi-vectors live in the index's token files, not here."""
    params = {DENSE: q.EdgeVectorParams(size=layout.dense_dim, distance=q.Distance.Cosine)}
    if layout.muvera_dim is not None:
        params[MUVERA] = q.EdgeVectorParams(
            size=layout.muvera_dim,
            distance=q.Distance.Dot,
            datatype=q.VectorStorageDatatype.Float16,
        )
    return params


def _schema(q: Any, kind: str) -> Any:
    return {
        "keyword": q.PayloadSchemaType.Keyword,
        "integer": q.PayloadSchemaType.Integer,
        "float": q.PayloadSchemaType.Float,
        "bool": q.PayloadSchemaType.Bool,
    }[kind]


__all__ = ["EdgeStore"]
