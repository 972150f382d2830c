"""Search modes over a store, given query vectors: no model, no documents — the part of an index
that the store-level tests and benchmarks drive with synthetic vectors.

* ``dense`` — cosine of single vectors (the store's HNSW);
* ``multivector`` — MaxSim over every (filtered) entry: the index's token files scanned in their
  first codec (exact for float16; the shortlist reranked by float16 when it is kept) for an embedded
  store; the store's own exact scan for a Qdrant server (``exact="scan"``: an in-memory torch copy
  instead, :class:`~uniembed.retrieval.scan.MultivectorScan`);
* ``two-stage`` — the ``candidates`` best by dense, reranked by MaxSim;
* ``muvera`` — the ``candidates`` best by the MUVERA encodings of the multi-vectors (HNSW),
  reranked by MaxSim (a collection created with MUVERA);
* ``binary`` — Hamming MaxSim over sign bits picks ``candidates``, float MaxSim reranks them.

Writes go through :meth:`Retriever.write` / :meth:`Retriever.delete`, which keep the token files (or
the in-memory copies) in step with the store; each batch is one store operation. A write is
prepared (:meth:`Retriever.prepare`: MUVERA encodings, token codes; no turn needed), then written
(:meth:`Retriever.write_prepared`), so that a writer of many batches prepares the next on another
thread and sends its codes to disk while the last one's store operation runs. Qdrant makes an
operation atomic for a crash (one write-ahead-log record) and the token files journal around it
(:mod:`~uniembed.retrieval.token_files`), but neither is atomic for readers running at the same
time: a readers-writer lock keeps searches out of the short write, so every search sees each
document whole or not at all.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch

from uniembed.core.iteration import chunked
from uniembed.core.muvera import Muvera
from uniembed.errors import InvalidInput
from uniembed.retrieval.filters import Condition, HasIds, MatchAny
from uniembed.retrieval.scan import Codec, MultivectorScan
from uniembed.retrieval.store import (
    Found,
    Point,
    Store,
    dense_search,
    multivector_search,
    muvera_search,
    rerank_search,
    two_stage_search,
)
from uniembed.retrieval.token_files import Encoded, TokenFiles

MODES = ("dense", "multivector", "two-stage", "muvera", "binary")
ROW = "row"  # payload field: the entry's row in the token files
Exact = Literal["auto", "scan", "store"]


@dataclasses.dataclass(frozen=True)
class PreparedWrite:
    """A write of :meth:`Retriever.write` ready to take its turn (:meth:`Retriever.prepare`)."""

    doc_ids: tuple[str, ...]
    points: tuple[Point, ...]  # with their MUVERA encodings
    multivectors: tuple[torch.Tensor, ...]
    tokens: Encoded | None  # the token files' codes (an embedded store)


class Retriever:
    """Searches and writes on ``store`` and, for an embedded store, its ``tokens`` files (see the
    module docstring); safe to share between threads."""

    def __init__(
        self, store: Store, tokens: TokenFiles | None = None, *, exact: Exact = "auto"
    ) -> None:
        if exact not in ("auto", "scan", "store"):
            raise InvalidInput(f"exact must be auto, scan or store; got {exact!r}")
        self.store = store
        self.tokens = tokens
        self.exact_in_scan = exact == "scan"
        self._lock = ReadWriteLock()
        self._scans: dict[str, MultivectorScan] = {}

    @classmethod
    def open(cls, store: Store) -> Retriever:
        """The retriever of ``store``; an embedded store's token files are opened (created in the
        layout's codecs when there are none, settled when a write was interrupted)."""
        dim = store.layout.multivector_dim
        if store.files is None or dim is None:
            return cls(store)
        if store.files.exists():
            files = TokenFiles.open(store.files, _row_lookup(store), _row_setter(store))
            return cls(store, files)
        return cls(store, TokenFiles.create(store.files, dim, store.layout.codecs))

    def optimize(self, compact: bool | None = None) -> int:
        """Build the store's vector indexes; rewrite the token files without replaced and deleted
        entries when ``compact`` (``None``: when they hold a fifth of the entries or more).
        Returns the bytes freed. Searches wait while the files are rewritten."""
        self.store.optimize()
        tokens = self.tokens
        if tokens is None:
            return 0
        snapshot = tokens.snapshot
        dead = snapshot.size - int(snapshot.alive.sum())
        if not dead or compact is False or (compact is None and 5 * dead < snapshot.size):
            return 0
        with self._lock.writing():
            return tokens.compact(_row_setter(self.store))

    def close(self) -> None:
        if self.tokens is not None:
            self.tokens.close()
        self.store.close()

    @cached_property
    def muvera(self) -> Muvera | None:
        """The MUVERA encoder of the collection (None: it keeps no encodings)."""
        spec, dim = self.store.layout.muvera, self.store.layout.multivector_dim
        if spec is None or dim is None:
            return None
        bits, projection, repetitions = spec
        return Muvera(dim, simhash_bits=bits, projection_dim=projection, repetitions=repetitions)

    # ----------------------------------------------------------------- writes
    def write(
        self, doc_ids: Sequence[str], points: Sequence[Point], multivectors: Sequence[torch.Tensor]
    ) -> None:
        """Replace documents ``doc_ids`` by ``points`` (``multivectors``: their stored rows, in
        order)."""
        self.write_prepared(self.prepare(doc_ids, points, multivectors))

    def prepare(
        self, doc_ids: Sequence[str], points: Sequence[Point], multivectors: Sequence[torch.Tensor]
    ) -> PreparedWrite:
        """The work of :meth:`write` that needs no turn: the MUVERA encodings, the token vectors
        checked and encoded. It may run beside another write (a writer of many batches prepares
        the next while the last one is written); :meth:`write_prepared` writes the result."""
        points = self._with_muvera(points, multivectors)
        encoded = None
        if self.tokens is not None:
            if len(multivectors) != len(points):
                raise InvalidInput("every entry of this index needs its multi-vector")
            arrays = [m.numpy() for m in multivectors]  # float16 rows stay float16
            encoded = self.tokens.encode([p.id for p in points], arrays)
        return PreparedWrite(tuple(doc_ids), tuple(points), tuple(multivectors), encoded)

    def write_prepared(self, prepared: PreparedWrite, then: PreparedWrite | None = None) -> None:
        """Write what :meth:`prepare` made (writes take turns; searches see it whole or not).
        ``then``: the write that comes next, whose token codes may go to disk while this one's
        store operation runs."""
        doc_ids, points, multivectors = prepared.doc_ids, prepared.points, prepared.multivectors
        with self._lock.writing():
            if self.tokens is not None:
                following = then.tokens if then is not None else None
                self._write_tokens(doc_ids, points, prepared.tokens, following)
                return
            for scan in self._scans.values():
                scan.remove(doc_ids)
            self.store.delete(list(doc_ids))
            if points:
                self.store.upsert(points)
            if multivectors:
                for scan in self._scans.values():
                    scan.add(
                        [p.id for p in points], [p.payload["id"] for p in points], multivectors
                    )

    def delete(self, doc_ids: Sequence[str]) -> None:
        self.write_prepared(self.prepare(doc_ids, [], []))

    def _write_tokens(
        self,
        doc_ids: Sequence[str],
        points: Sequence[Point],
        encoded: Encoded | None,
        then: Encoded | None = None,
    ) -> None:
        """The store write between the token files' journal and commit (token_files)."""
        tokens = self.tokens
        assert tokens is not None and encoded is not None
        held = self._held(doc_ids)
        retired = [int(f.payload[ROW]) for f in held if ROW in f.payload]
        try:
            pending = tokens.begin(encoded, retired, then)
            for point, row in zip(points, pending.rows, strict=True):
                point.payload[ROW] = row
            if held:  # new documents (a bulk load's): no store operation to delete nothing
                self.store.delete(list(doc_ids))
            if points:
                self.store.upsert(points)
        except BaseException:
            tokens.settle(_row_lookup(self.store))
            raise
        tokens.commit(pending)

    def _held(self, doc_ids: Sequence[str]) -> list[Found]:
        """The entries the store holds for ``doc_ids`` (their token-file rows in the payload)."""
        if not doc_ids:
            return []
        return list(
            self.store.scroll((MatchAny("id", tuple(doc_ids)),), payload=[ROW], page_size=4096)
        )

    def _with_muvera(
        self, points: Sequence[Point], multivectors: Sequence[torch.Tensor]
    ) -> Sequence[Point]:
        if self.muvera is None or not points:
            return points
        encodings = self.muvera.documents(multivectors).tolist()
        return [
            dataclasses.replace(point, muvera=encoding)
            for point, encoding in zip(points, encodings, strict=True)
        ]

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
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        read: dict[str, Any] = {"payload": payload, "with_multivector": with_multivector}
        if self.tokens is not None:
            with self._lock.reading():
                return self._search_tokens(dense, multi, k, mode, candidates, conditions, read)
        codec = self._codec(mode)
        if codec is not None:
            self.scan(codec)  # loading takes the write lock: before the read lock, not inside it
        with self._lock.reading():
            return self._search_store(dense, multi, k, mode, candidates, conditions, read)

    def _search_tokens(
        self,
        dense: torch.Tensor | None,
        multi: torch.Tensor | None,
        k: int,
        mode: str,
        candidates: int,
        conditions: tuple[Condition, ...],
        read: dict[str, Any],
    ) -> list[Found]:
        """A search of an embedded store: first stages in the store or the token files, MaxSim
        in the token files, payloads from the store."""
        tokens = self.tokens
        assert tokens is not None
        if mode == "dense":
            return self._records_of(
                self.store.search(dense_search(_list(dense), k, conditions)), read
            )
        query = _array(multi)
        best = tokens.best
        if mode == "multivector":
            scanned = tokens.names[0]
            shortlist = k if scanned == best else max(candidates, k)
            ranked = tokens.scan(scanned, query, shortlist, self._allowed_rows(conditions))
            if scanned != best:
                ranked = tokens.rerank(best, query, [row for row, _ in ranked], k)
        elif mode == "binary":
            found = tokens.scan("binary", query, max(candidates, k), self._allowed_rows(conditions))
            ranked = tokens.rerank(best, query, [row for row, _ in found], k)
        else:
            stage = self._first_stage(dense, multi, mode, max(candidates, k), conditions)
            rows = [int(f.payload[ROW]) for f in self.store.search(stage) if ROW in f.payload]
            ranked = tokens.rerank(best, query, rows, k)
        return self._rows_records(ranked, read)

    def _first_stage(
        self,
        dense: torch.Tensor | None,
        multi: torch.Tensor | None,
        mode: str,
        limit: int,
        conditions: tuple[Condition, ...],
    ) -> Any:
        if mode == "two-stage":
            return dense_search(_list(dense), limit, conditions, payload=[ROW])
        if self.muvera is None:
            raise InvalidInput("this index keeps no MUVERA encodings (create it with muvera)")
        assert multi is not None
        encoding = self.muvera.query(multi).tolist()
        return muvera_search(encoding, limit, conditions, payload=[ROW])

    def _search_store(
        self,
        dense: torch.Tensor | None,
        multi: torch.Tensor | None,
        k: int,
        mode: str,
        candidates: int,
        conditions: tuple[Condition, ...],
        read: dict[str, Any],
    ) -> list[Found]:
        """A search of a Qdrant server: MaxSim in the store (or an in-memory scan)."""
        if mode == "dense":
            return self.store.search(dense_search(_list(dense), k, conditions, **read))
        if mode == "two-stage":
            search = two_stage_search(_list(dense), _list(multi), k, candidates, conditions, **read)
            return self.store.search(search)
        if mode == "muvera":
            assert multi is not None
            stage = self._first_stage(dense, multi, mode, max(candidates, k), conditions)
            ids = [f.id for f in self.store.search(stage)]
            return self.store.search(rerank_search(_list(multi), ids, k, **read)) if ids else []
        if mode == "multivector" and not self.exact_in_scan:
            return self.store.search(multivector_search(_list(multi), k, conditions, **read))
        if mode == "multivector":
            assert multi is not None
            ranked = self.scan("float16").search(multi, k, self._allowed(conditions))
            return self._records(ranked, read)
        assert multi is not None
        ranked = self.scan("binary").search(multi, max(candidates, k), self._allowed(conditions))
        ids = [pid for pid, _ in ranked]
        return self.store.search(rerank_search(_list(multi), ids, k, **read)) if ids else []

    def _codec(self, mode: str) -> Codec | None:
        """The in-memory scan ``mode`` reads on a Qdrant server, if any."""
        if mode == "binary":
            return "binary"
        return "float16" if mode == "multivector" and self.exact_in_scan else None

    def scan(self, codec: Codec) -> MultivectorScan:
        """The in-memory copy of a Qdrant server's multi-vectors in ``codec``, loaded on first
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
        """The point ids a filter admits (the in-memory scans filter by id)."""
        if not conditions:
            return None
        return {found.id for found in self.store.scroll(conditions, payload=False, page_size=4096)}

    def _allowed_rows(self, conditions: tuple[Condition, ...]) -> np.ndarray | None:
        """The token-file rows a filter admits, as a mask (None: no filter)."""
        if not conditions:
            return None
        tokens = self.tokens
        assert tokens is not None
        mask = np.zeros(tokens.snapshot.size, dtype=bool)
        for found in self.store.scroll(conditions, payload=[ROW], page_size=4096):
            row = found.payload.get(ROW)
            if isinstance(row, int) and 0 <= row < len(mask):
                mask[row] = True
        return mask

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

    def _rows_records(self, ranked: list[tuple[int, float]], read: dict[str, Any]) -> list[Found]:
        """Token-file results as store records, in rank order (with their vectors when asked)."""
        tokens = self.tokens
        assert tokens is not None
        ids = tokens.point_ids([row for row, _ in ranked])
        found = self._records(
            [(pid, score) for pid, (_, score) in zip(ids, ranked, strict=True)],
            {**read, "with_multivector": False},
        )
        if not read["with_multivector"]:
            return found
        rows = dict(zip(ids, (row for row, _ in ranked), strict=True))
        return [
            dataclasses.replace(f, multivector=torch.from_numpy(tokens.vectors(rows[f.id])))
            for f in found
        ]

    def _records_of(self, found: list[Found], read: dict[str, Any]) -> list[Found]:
        """``found`` (a dense search of an embedded store) with the payload and vectors asked."""
        if not found:
            return []
        tokens = self.tokens
        assert tokens is not None
        rows = self.store.scroll((HasIds(tuple(f.id for f in found)),), payload=[ROW])
        row_of = {f.id: int(f.payload[ROW]) for f in rows if ROW in f.payload}
        ranked = [(row_of[f.id], f.score) for f in found if f.id in row_of]
        return self._rows_records(ranked, read)


def _row_lookup(store: Store) -> Any:
    """Point ids -> the token-file row the store holds for each (those it holds)."""

    def lookup(point_ids: Sequence[str]) -> Mapping[str, int]:
        rows: dict[str, int] = {}
        for chunk in chunked(point_ids, 4096):
            for found in store.scroll((HasIds(tuple(chunk)),), payload=[ROW], page_size=4096):
                if isinstance(found.payload.get(ROW), int):
                    rows[found.id] = found.payload[ROW]
        return rows

    return lookup


def _row_setter(store: Store) -> Any:
    """Tell the store each point's new token-file row (after a compaction)."""

    def set_rows(rows: Mapping[str, int]) -> None:
        store.set_payloads({point: {ROW: row} for point, row in rows.items()})

    return set_rows


def _list(vectors: torch.Tensor | None) -> Any:
    if vectors is None or vectors.numel() == 0:
        raise InvalidInput("this mode needs vectors the index does not have")
    return vectors.tolist()


def _array(vectors: torch.Tensor | None) -> np.ndarray:
    if vectors is None or vectors.numel() == 0:
        raise InvalidInput("this mode needs vectors the index does not have")
    return np.ascontiguousarray(vectors.float().numpy())


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
