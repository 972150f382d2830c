"""Search modes over a store, given query vectors: no model, no documents — the part of an index
that the store-level tests and benchmarks drive with synthetic vectors.

* ``dense`` — cosine of single vectors (the store's HNSW);
* ``multivector`` — exact MaxSim over every (filtered) entry: on an in-memory torch copy
  (:class:`~uniembed.retrieval.scan.MultivectorScan`) when the store is embedded, in the store
  otherwise (``exact="auto"``; ``"scan"`` / ``"store"`` force one);
* ``two-stage`` — ONE store query: the ``candidates`` best by dense, reranked by MaxSim;
* ``binary`` — Hamming MaxSim over sign bits (in memory) picks ``candidates``, the store reranks
  them by float MaxSim.

Writes go through :meth:`Retriever.write` / :meth:`Retriever.delete`, which keep the in-memory
copies in step with the store; each batch is one store operation. Qdrant makes an operation atomic
for a crash (one write-ahead-log record) but not for readers running at the same time (a concurrent
query can see some points of an upsert, or of a delete, and not others): a readers-writer lock keeps
searches out of the short store write, so every search sees each document whole or not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from uniembed.core.iteration import chunked
from uniembed.errors import InvalidInput
from uniembed.retrieval.filters import Condition, HasIds
from uniembed.retrieval.scan import Codec, MultivectorScan
from uniembed.retrieval.store import (
    Found,
    Point,
    Store,
    dense_search,
    multivector_search,
    rerank_search,
    two_stage_search,
)

MODES = ("dense", "multivector", "two-stage", "binary")
Exact = Literal["auto", "scan", "store"]


class Retriever:
    """Searches and writes on ``store`` (see the module docstring); safe to share between
    threads."""

    def __init__(self, store: Store, *, exact: Exact = "auto") -> None:
        if exact not in ("auto", "scan", "store"):
            raise InvalidInput(f"exact must be auto, scan or store; got {exact!r}")
        self.store = store
        self.exact_in_scan = exact == "scan" or (exact == "auto" and store.embedded)
        self._lock = ReadWriteLock()
        self._scans: dict[str, MultivectorScan] = {}

    # ----------------------------------------------------------------- writes
    def write(
        self, doc_ids: Sequence[str], points: Sequence[Point], multivectors: Sequence[torch.Tensor]
    ) -> None:
        """Replace documents ``doc_ids`` by ``points`` (``multivectors``: their stored rows, in
        order)."""
        with self._lock.writing():
            for scan in self._scans.values():
                scan.remove(doc_ids)
            self.store.delete(list(doc_ids))
            self.store.upsert(points)
            if multivectors:
                for scan in self._scans.values():
                    scan.add(
                        [p.id for p in points], [p.payload["id"] for p in points], multivectors
                    )

    def delete(self, doc_ids: Sequence[str]) -> None:
        with self._lock.writing():
            for scan in self._scans.values():
                scan.remove(doc_ids)
            self.store.delete(list(doc_ids))

    # ----------------------------------------------------------------- searches
    def search(
        self,
        dense: torch.Tensor | None,
        multi: torch.Tensor | None,
        k: int,
        *,
        mode: str,
        candidates: int,
        conditions: tuple[Condition, ...] = (),
        payload: bool | Sequence[str] = True,
        with_multivector: bool = False,
    ) -> list[Found]:
        """The ``k`` best entries for the query vectors (``dense`` (d,), ``multi`` (tokens,
        128))."""
        codec = self._codec(mode)
        if codec is not None:
            self.scan(codec)  # loading takes the write lock: before the read lock, not inside it
        with self._lock.reading():
            return self._search(
                dense, multi, k, mode, candidates, conditions, payload, with_multivector
            )

    def _search(
        self,
        dense: torch.Tensor | None,
        multi: torch.Tensor | None,
        k: int,
        mode: str,
        candidates: int,
        conditions: tuple[Condition, ...],
        payload: bool | Sequence[str],
        with_multivector: bool,
    ) -> list[Found]:
        read: dict[str, Any] = {"payload": payload, "with_multivector": with_multivector}
        if mode == "dense":
            return self.store.search(dense_search(_list(dense), k, conditions, **read))
        if mode == "two-stage":
            search = two_stage_search(_list(dense), _list(multi), k, candidates, conditions, **read)
            return self.store.search(search)
        if mode == "multivector" and not self.exact_in_scan:
            return self.store.search(multivector_search(_list(multi), k, conditions, **read))
        if mode == "multivector":
            assert multi is not None
            ranked = self.scan("float16").search(multi, k, self._allowed(conditions))
            return self._records(ranked, read)
        if mode == "binary":
            assert multi is not None
            ranked = self.scan("binary").search(
                multi, max(candidates, k), self._allowed(conditions)
            )
            ids = [pid for pid, _ in ranked]
            return self.store.search(rerank_search(_list(multi), ids, k, **read)) if ids else []
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}")

    def _codec(self, mode: str) -> Codec | None:
        """The in-memory scan ``mode`` reads, if any."""
        if mode == "binary":
            return "binary"
        return "float16" if mode == "multivector" and self.exact_in_scan else None

    def scan(self, codec: Codec) -> MultivectorScan:
        """The in-memory copy of the multi-vectors in ``codec``, loaded from the store on first
        use."""
        scan = self._scans.get(codec)
        if scan is not None:
            return scan
        dim = self.store.layout.multivector_dim
        if dim is None:
            raise InvalidInput("this index stores no multi-vectors")
        with self._lock.writing():  # no writes while loading, so the copy matches the store
            if codec not in self._scans:
                scan = MultivectorScan(codec, dim)
                for chunk in chunked(
                    self.store.scroll(payload=["id"], with_multivector=True), 1024
                ):
                    scan.add(
                        [f.id for f in chunk],
                        [f.payload["id"] for f in chunk],
                        [f.multivector for f in chunk],
                    )  # type: ignore[misc]
                self._scans[codec] = scan
            return self._scans[codec]

    def _allowed(self, conditions: tuple[Condition, ...]) -> set[str] | None:
        """The point ids a filter admits (the scans filter by id)."""
        if not conditions:
            return None
        return {found.id for found in self.store.scroll(conditions, payload=False, page_size=4096)}

    def _records(self, ranked: list[tuple[str, float]], read: dict[str, Any]) -> list[Found]:
        """Scan results with their payloads (and vectors) read from the store, in rank order."""
        if not ranked:
            return []
        ids = tuple(pid for pid, _ in ranked)
        records = {f.id: f for f in self.store.scroll((HasIds(ids),), **read)}
        return [
            Found(pid, records[pid].payload, score, records[pid].multivector)
            for pid, score in ranked
            if pid in records
        ]


def _list(vectors: torch.Tensor | None) -> Any:
    if vectors is None or vectors.numel() == 0:
        raise InvalidInput("this mode needs vectors the index does not have")
    return vectors.tolist()


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before new readers (no starvation)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            self._condition.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()
