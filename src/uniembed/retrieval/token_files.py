"""The multi-vectors of an embedded index, on disk and memory-mapped (``<index>/tokens``).

* ``codecs.json`` — the names of the codecs the token vectors are kept in, fixed at creation; each
  codec's state (:mod:`uniembed.core.codecs`: a rotation's signs, the residual codec's centroids)
  in ``codec.<name>/``, written once it exists (the residual codec trains on the first write);
* ``<codec>.codes`` — per codec, one fixed-size code per stored token, the tokens of an entry one
  after another and entries in the order written;
* ``entries`` — one 32-byte record per entry ever written (:data:`ENTRY`): its point id, first
  token, token count and whether it is alive;
* ``journal.json`` — present only while a write is under way.

Opening maps the files and reads no vectors: the process holds what a search touches, as the OS
caches it, and its memory does not grow with the corpus. A search scores the codes where they lie
(the codec's kernel reads the mapped pages).

Writes (the store is the truth of which entries exist; every store point carries its entry's
``row``): :meth:`TokenFiles.encode` checks a write's vectors and encodes them (it touches no
file, so a writer of many batches encodes the next while the last one is written);
:meth:`TokenFiles.begin` appends the codes and syncs them while it writes the journal (the entries
it adds and the rows it will retire), then appends the entries and syncs them; the caller then
changes the store; :meth:`TokenFiles.commit` marks the retired rows dead and removes the journal.
A process killed at any point leaves a journal, and the next open settles it by asking the store:
a journalled row is alive exactly when the store holds its point with that row. Codes past the
last entry (a write killed before its entries, or the codes :meth:`TokenFiles.begin` sends ahead
for the write that follows it) mean nothing: an open cuts them and the next write overwrites them.
Replaced and deleted entries keep their bytes until :meth:`TokenFiles.compact` rewrites the files
without them: the new files are written beside the old ones (``*.compact``) and synced,
``compact.json`` marks them complete, the store learns every entry's new row, and the new files are
renamed over the old ones; an open that finds ``compact.json`` redoes the last two steps (both
idempotent), one that finds ``*.compact`` files without it deletes them.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from uniembed.core.checks import all_finite
from uniembed.core.codecs import CODECS, Codec, make_codec, read_codec, save_codec
from uniembed.core.files import write_text
from uniembed.errors import InvalidInput, UniembedError

CODECS_FILE = "codecs.json"
ENTRIES_FILE = "entries"
JOURNAL_FILE = "journal.json"
COMPACT_FILE = "compact.json"  # present while a compaction swaps its files in
COMPACTED = ".compact"  # suffix of the files a compaction writes
COPY_ROWS = 1 << 18  # token codes a compaction copies at a time (64 MiB of float16)
RERANK_TOKENS = 32768  # tokens gathered per kernel call of a rerank (8 MiB of float16 codes)
ENTRY = np.dtype(
    [("point", "V16"), ("start", "<i8"), ("count", "<i4"), ("alive", "u1"), ("spare", "V3")]
)
Lookup = Callable[[Sequence[str]], Mapping[str, int]]  # point ids -> the row the store holds
SetRows = Callable[[Mapping[str, int]], None]  # tell the store each point's new row


@dataclass(frozen=True)
class Pending:
    """A write under way: the rows it adds (in the order of its points) and the rows it
    retires."""

    rows: range
    retired: tuple[int, ...]


@dataclass(frozen=True)
class Encoded:
    """A write's entries as codes (:meth:`TokenFiles.encode`), for :meth:`TokenFiles.begin`."""

    point_ids: tuple[str, ...]
    counts: np.ndarray  # (entries,) tokens of each
    codes: Mapping[str, np.ndarray]  # codec name -> (tokens, bytes_per_token) uint8
    sources: tuple[np.ndarray, ...]  # the vectors given: codes may be views of them (float16)
    buffers: WriteBuffers | None  # what the codes lie in, reused once they are written


@dataclass(frozen=True)
class _CodesAhead:
    """Codes of the next write, going to disk while the last one's store operation runs."""

    encoded: Encoded
    start: int  # the token row they are written at
    synced: list[Future[None]]


@dataclass(frozen=True)
class Snapshot:
    """The files as mapped after the last completed write; what one search reads."""

    entries: np.ndarray  # (n,) ENTRY records
    codes: Mapping[str, np.ndarray]  # codec name -> (tokens, bytes_per_token) uint8

    @property
    def size(self) -> int:
        return len(self.entries)

    @cached_property
    def offsets(self) -> np.ndarray:
        """(n + 1,) first token of each entry, then the end."""
        starts = np.asarray(self.entries["start"], dtype=np.int64)
        end = int(starts[-1] + self.entries["count"][-1]) if self.size else 0
        return np.append(starts, end)

    @cached_property
    def alive(self) -> np.ndarray:
        return np.asarray(self.entries["alive"], dtype=bool)


class TokenFiles:
    """The token vectors of one embedded index (see the module docstring). Writes must be
    serialised by the caller (the :class:`~uniembed.retrieval.retriever.Retriever`'s lock);
    searches may run beside them and read the snapshot of the last completed write."""

    def __init__(self, path: Path, dim: int, codecs: dict[str, Codec | None]) -> None:
        self.path = path
        self.dim = dim
        self._codecs = codecs  # None: trained on the first write
        self._training = threading.Lock()  # encodes may run beside each other
        self._buffers = BufferPool(tuple(codecs))
        self._io: ThreadPoolExecutor | None = None
        self._ahead: _CodesAhead | None = None
        self._open_files()

    def _open_files(self) -> None:
        flags = os.O_RDWR | os.O_CREAT
        self._entries_fd = os.open(self.path / ENTRIES_FILE, flags, 0o644)
        self._code_fds = {
            name: os.open(self.path / f"{name}.codes", flags, 0o644) for name in self._codecs
        }
        self.snapshot = self._map()

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: Path, dim: int, codecs: Sequence[str]) -> TokenFiles:
        """Empty files for ``dim``-wide token vectors kept in ``codecs`` (the first is scanned)."""
        check_codecs(codecs)
        path.mkdir(parents=True, exist_ok=True)
        for name in codecs:
            if name not in NEEDS_SAMPLE:
                _save_codec(path, make_codec(name, dim))
        spec = {"dim": dim, "codecs": list(codecs)}
        write_text(path / CODECS_FILE, json.dumps(spec), durable=True)
        return cls.open(path, lookup=None)

    @classmethod
    def open(cls, path: Path, lookup: Lookup | None, set_rows: SetRows | None = None) -> TokenFiles:
        """Map the files at ``path``; an interrupted write is settled with ``lookup`` (the store's
        rows of point ids), an interrupted compaction finished with ``set_rows``."""
        try:
            spec = json.loads((path / CODECS_FILE).read_text(encoding="utf-8"))
            dim = int(spec["dim"])
            codecs = {name: _read_codec(path, name) for name in spec["codecs"]}
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise UniembedError(
                f"could not open the token vectors at {path}: {path / CODECS_FILE} is unreadable "
                f"({type(error).__name__}: {error}); rebuild the index (uniembed index)"
            ) from error
        if (path / COMPACT_FILE).exists():
            if set_rows is None:
                raise UniembedError(f"{path} holds an unfinished compaction and no store")
            _swap_compacted(path, list(codecs), set_rows)
        for stray in path.glob(f"*{COMPACTED}"):  # a compaction that never got complete
            stray.unlink()
        files = cls(path, dim, codecs)
        if (path / JOURNAL_FILE).exists():
            if lookup is None:
                raise UniembedError(f"{path} holds an interrupted write and no store to settle it")
            files.settle(lookup)
        files.trim()
        return files

    def close(self) -> None:
        """Close the files (again: nothing)."""
        fds = [self._entries_fd, *self._code_fds.values()]
        self._entries_fd, self._code_fds = -1, {}
        self._buffers = BufferPool(self.names)
        self._ahead = None
        if self._io is not None:
            self._io.shutdown()  # after the writes under way
            self._io = None
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _writers(self) -> ThreadPoolExecutor:
        """Where each codec's codes are written and synced (one thread a codec, made on the first
        write)."""
        if self._io is None:
            self._io = ThreadPoolExecutor(len(self._codecs), thread_name_prefix="uniembed-codes")
        return self._io

    @property
    def names(self) -> tuple[str, ...]:
        """Codec names; the first is what full scans read."""
        return tuple(self._codecs)

    def codec(self, name: str) -> Codec:
        codec = self._codecs.get(name)
        if codec is None:
            raise InvalidInput(f"this index keeps no {name} token codes (it keeps {self.names})")
        return codec

    @property
    def nbytes(self) -> int:
        """Bytes of token codes on disk (every codec, retired entries included)."""
        return sum(int(codes.nbytes) for codes in self.snapshot.codes.values())

    # ----------------------------------------------------------------- writes
    def encode(self, point_ids: Sequence[str], multivectors: Sequence[np.ndarray]) -> Encoded:
        """Check the entries ``point_ids`` (their ``multivectors``: (tokens, dim) float arrays) and
        encode them in every codec, for :meth:`begin`. Touches no file but a codec's first
        training, so it may run beside a write (not beside :meth:`close`)."""
        counts = np.array([len(m) for m in multivectors], dtype=np.int64)
        if len(point_ids) != len(counts) or (counts < 1).any():
            raise InvalidInput("every entry needs a multi-vector of at least one token")
        if not len(point_ids):
            return Encoded((), counts, {}, (), None)
        sources = tuple(np.asarray(m) for m in multivectors)
        for array in sources:
            if array.ndim != 2 or array.shape[1] != self.dim:
                raise InvalidInput(f"token vectors must be {self.dim} wide; got {array.shape}")
        buffers = self._buffers.take()
        runs = _runs(sources, buffers.vectors)
        if not all(all_finite(run) for run in runs):  # once for every codec
            raise InvalidInput("token vectors must be finite (no NaN or infinity)")
        self._train(runs)
        codes = {name: self._encode_runs(name, runs, buffers) for name in self.names}
        return Encoded(tuple(point_ids), counts, codes, sources, buffers)

    def _encode_runs(self, name: str, runs: list[np.ndarray], buffers: WriteBuffers) -> np.ndarray:
        """The codes of ``runs`` (finite: checked) in codec ``name``, one after another."""
        codec = self.codec(name)
        out = buffers.codes_of(name, sum(len(run) for run in runs), codec)
        if len(runs) == 1:  # the float16 codec may answer with the run's own bytes
            return codec.encode(runs[0], out=out, known_finite=True)
        row = 0
        for run in runs:
            part = out[row : row + len(run)]
            codes = codec.encode(run, out=part, known_finite=True)
            if codes is not part:
                part[:] = codes
            row += len(run)
        return out

    def begin(
        self, encoded: Encoded, retired: Sequence[int], then: Encoded | None = None
    ) -> Pending:
        """Journal the write, then append the entries of ``encoded`` (:meth:`encode`) and sync them;
        the rows ``retired`` die at :meth:`commit`. The caller writes the store in between (see
        the module docstring). ``then``: the write that comes next, whose codes start going to
        disk now, past this write's, while the caller writes the store (codes past the last entry
        are harmless: an open cuts them, and a write that finds them elsewhere writes again)."""
        snapshot = self.snapshot
        first, tokens = snapshot.size, int(snapshot.offsets[-1])
        added = len(encoded.point_ids)
        # codes go first, on threads, beside the journal: codes past the last entry are cut at
        # open, so only the entries must wait for the journal
        synced = self._codes_written(encoded, tokens)
        try:
            journal = {"entries": first, "added": added, "retired": [int(r) for r in retired]}
            write_text(self.path / JOURNAL_FILE, json.dumps(journal), durable=True)
            if added:
                records = np.zeros(added, dtype=ENTRY)
                records["point"] = [uuid.UUID(pid).bytes for pid in encoded.point_ids]
                records["start"] = tokens + np.concatenate([[0], np.cumsum(encoded.counts)[:-1]])
                records["count"] = encoded.counts
                records["alive"] = 1
                _write_synced(
                    self._entries_fd, records.view(np.uint8).reshape(-1, ENTRY.itemsize), first
                )
        finally:  # the codes are written (or failed) before anything else may touch the files
            wait(synced)
        for future in synced:
            future.result()
        if encoded.buffers is not None:
            self._buffers.give_back(encoded.buffers)
        if then is not None and len(then.point_ids):
            end = tokens + int(encoded.counts.sum())
            self._ahead = _CodesAhead(then, end, self._write_codes(then, end))
        return Pending(range(first, first + added), tuple(journal["retired"]))

    def _codes_written(self, encoded: Encoded, start: int) -> list[Future[None]]:
        """The writes of ``encoded``'s codes at token row ``start``: the ones the last write
        started ahead when they are these, else new ones (once any ahead are done)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead.encoded is encoded and ahead.start == start:
                return ahead.synced
            wait(ahead.synced)  # another write's, or elsewhere: done before these overwrite them
        return self._write_codes(encoded, start) if len(encoded.point_ids) else []

    def _write_codes(self, encoded: Encoded, start: int) -> list[Future[None]]:
        """Each codec's codes of ``encoded`` written at token row ``start`` and synced, on the
        codecs' threads."""
        return [
            self._writers().submit(_write_synced, fd, encoded.codes[name], start)
            for name, fd in self._code_fds.items()
        ]

    def commit(self, pending: Pending) -> None:
        """The store took the write: retire the journalled rows, drop the journal."""
        self._set_alive(pending.retired, False)
        self._finish()

    def settle(self, lookup: Lookup) -> None:
        """Finish or undo an interrupted write (none: nothing to do): a journalled row is alive
        exactly when the store holds its point with that row; trailing added rows that are not
        alive are cut off."""
        if not (self.path / JOURNAL_FILE).exists():
            return
        journal = json.loads((self.path / JOURNAL_FILE).read_text(encoding="utf-8"))
        first, added = int(journal["entries"]), int(journal["added"])
        written = os.fstat(self._entries_fd).st_size // ENTRY.itemsize
        size = min(written, first + added)
        os.ftruncate(self._entries_fd, size * ENTRY.itemsize)
        entries = self._read_entries(size)
        rows = sorted({*range(first, size), *(int(r) for r in journal["retired"] if r < size)})
        points = [str(uuid.UUID(bytes=bytes(entries[r]["point"]))) for r in rows]
        held = lookup(points)
        alive = {r for r, pid in zip(rows, points, strict=True) if held.get(pid) == r}
        self._set_alive([r for r in rows if r not in alive], False)
        self._set_alive(sorted(alive), True)
        keep = size
        while keep > first and keep - 1 not in alive:
            keep -= 1
        os.ftruncate(self._entries_fd, keep * ENTRY.itemsize)
        self._finish()

    def compact(self, set_rows: SetRows) -> int:
        """Rewrite the files without dead entries (see the module docstring); the bytes freed."""
        snapshot = self.snapshot
        keep = np.flatnonzero(snapshot.alive)
        if len(keep) == snapshot.size:
            return 0
        before = self.nbytes
        entries = np.array(snapshot.entries[keep])
        counts = entries["count"].astype(np.int64)
        old_starts = entries["start"].astype(np.int64)
        entries["start"] = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(keep) else []
        for name in self._codecs:
            _write_ranges(
                self.path / f"{name}.codes{COMPACTED}", snapshot.codes[name], old_starts, counts
            )
        with open(self.path / f"{ENTRIES_FILE}{COMPACTED}", "wb") as out:
            out.write(entries.tobytes())
            out.flush()
            os.fsync(out.fileno())
        write_text(self.path / COMPACT_FILE, json.dumps({"entries": len(keep)}), durable=True)
        self.close()
        _swap_compacted(self.path, list(self._codecs), set_rows)
        self._open_files()
        return before - self.nbytes

    def trim(self) -> None:
        """Cut codes past the last entry (left by a write that was undone)."""
        end = int(self.snapshot.offsets[-1])
        for name, fd in self._code_fds.items():
            codec = self._codecs[name]  # None: untrained, so nothing was ever written
            os.ftruncate(fd, end * codec.bytes_per_token if codec is not None else 0)
        self.snapshot = self._map()

    # ----------------------------------------------------------------- reads
    def point_ids(self, rows: Sequence[int]) -> list[str]:
        entries = self.snapshot.entries
        return [str(uuid.UUID(bytes=bytes(entries[r]["point"]))) for r in rows]

    def scan(
        self, name: str, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best alive rows by the MaxSim of ``query`` (tokens, dim) over the ``name``
        codes of every entry (among the rows ``allowed``, a bool mask, when given)."""
        snapshot = self.snapshot
        if snapshot.size == 0:
            return []
        scores = self.codec(name).maxsim(query, snapshot.codes[name], snapshot.offsets)
        mask = snapshot.alive if allowed is None else snapshot.alive & allowed[: snapshot.size]
        return _top(np.where(mask, scores, -np.inf), k)

    def rerank(
        self, name: str, query: np.ndarray, rows: Sequence[int], k: int
    ) -> list[tuple[int, float]]:
        """The ``k`` best of ``rows`` (alive ones) by MaxSim over their ``name`` codes."""
        snapshot = self.snapshot
        rows = np.array(sorted({int(r) for r in rows if 0 <= r < snapshot.size}), dtype=np.int64)
        rows = rows[snapshot.alive[rows]] if len(rows) else rows
        if not len(rows):
            return []
        codec, codes, offsets = self.codec(name), snapshot.codes[name], snapshot.offsets
        starts, ends = offsets[rows], offsets[rows + 1]
        scores = np.empty(len(rows), dtype=np.float32)
        for first, last in _batches(ends - starts, RERANK_TOKENS):
            gathered = np.concatenate(
                [codes[s:e] for s, e in zip(starts[first:last], ends[first:last])]
            )
            local = np.concatenate([[0], np.cumsum(ends[first:last] - starts[first:last])])
            scores[first:last] = codec.maxsim(query, gathered, local)
        return [(int(rows[i]), s) for i, s in _top(scores, k)]

    def vectors(self, row: int) -> np.ndarray:
        """The (tokens, dim) float32 vectors of entry ``row`` as the best codec kept them."""
        snapshot = self.snapshot
        name = self.best
        start, end = int(snapshot.offsets[row]), int(snapshot.offsets[row + 1])
        return self.codec(name).decode(snapshot.codes[name][start:end])

    @property
    def best(self) -> str:
        """The codec that reranks: float16 when kept, else the scanned one."""
        return "float16" if "float16" in self._codecs else self.names[0]

    # ----------------------------------------------------------------- internals
    def _train(self, runs: list[np.ndarray]) -> None:
        with self._training:
            untrained = [name for name, codec in self._codecs.items() if codec is None]
            if not untrained:
                return
            sample = np.concatenate(runs, dtype=np.float32)
            for name in untrained:
                codec = make_codec(name, self.dim, sample)
                _save_codec(self.path, codec)
                self._codecs[name] = codec

    def _set_alive(self, rows: Sequence[int], alive: bool) -> None:
        flag = bytes([int(alive)])
        offset = ENTRY.fields["alive"][1]
        for row in rows:
            os.pwrite(self._entries_fd, flag, int(row) * ENTRY.itemsize + offset)

    def _finish(self) -> None:
        os.fdatasync(self._entries_fd)
        (self.path / JOURNAL_FILE).unlink(missing_ok=True)
        self.snapshot = self._map()

    def _read_entries(self, size: int) -> np.ndarray:
        if size == 0:
            return np.zeros(0, dtype=ENTRY)
        return np.memmap(self.path / ENTRIES_FILE, dtype=ENTRY, mode="r", shape=(size,))

    def _map(self) -> Snapshot:
        size = os.fstat(self._entries_fd).st_size // ENTRY.itemsize
        entries = self._read_entries(size)
        end = int(entries["start"][-1] + entries["count"][-1]) if size else 0
        codes = {}
        for name in self._codecs:
            codec = self._codecs[name]
            width = codec.bytes_per_token if codec is not None else 1
            codes[name] = (
                np.memmap(self.path / f"{name}.codes", dtype=np.uint8, mode="r", shape=(end, width))
                if end
                else np.zeros((0, width), dtype=np.uint8)
            )
        return Snapshot(entries, codes)


NEEDS_SAMPLE = frozenset({"residual"})  # codecs trained on the first write's vectors


class StagingBuffer:
    """One grow-only buffer that every write gathers its token vectors (or a codec's codes) into.

    A fresh array per write (32 MiB for a default batch) is page faults on every write, and
    buffers of one size under glibc's largest mmap threshold are served from its heap, where
    long-lived small allocations split them: the process then grew by one batch per write
    (BENCHMARKS.md, corpus scale; int8 codes of a batch, 17 MB, did it too). Reusing one buffer
    avoids both; it is released on close.
    """

    GROWTH = 1.25  # head room when it grows: batches of whole documents vary in size

    def __init__(self) -> None:
        self._bytes = np.empty(0, dtype=np.uint8)

    def array(self, rows: int, width: int, dtype: np.dtype) -> np.ndarray:
        """A (rows, width) ``dtype`` array in the buffer (its contents undefined), valid until the
        next call."""
        size = rows * width * dtype.itemsize
        if size > self._bytes.nbytes:
            self._bytes = np.empty(int(size * self.GROWTH), dtype=np.uint8)
        return self._bytes[:size].view(dtype).reshape(rows, width)

    def gather(self, arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
        """``arrays`` (each (rows, width)) one after another as one (rows, width) ``dtype`` array
        in the buffer."""
        out = self.array(sum(len(a) for a in arrays), arrays[0].shape[1], dtype)
        np.concatenate(arrays, out=out, casting="unsafe")
        return out


class WriteBuffers:
    """The buffers one write encodes in: its token vectors gathered (when they do not lie one
    after another already) and each codec's codes."""

    def __init__(self, names: Sequence[str]) -> None:
        self.vectors = StagingBuffer()
        self._codes = {name: StagingBuffer() for name in names}

    def codes_of(self, name: str, rows: int, codec: Codec) -> np.ndarray:
        return self._codes[name].array(rows, codec.bytes_per_token, np.dtype(np.uint8))


class BufferPool:
    """:class:`WriteBuffers` reused across writes: as many exist as writes are encoded and not yet
    written (one for single writes; up to four in a file's ingest: the write under way, the next,
    one queued and one being encoded — 80 MB for 131,072 int8 + binary tokens each)."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._free: list[WriteBuffers] = []
        self._lock = threading.Lock()

    def take(self) -> WriteBuffers:
        with self._lock:
            return self._free.pop() if self._free else WriteBuffers(self._names)

    def give_back(self, buffers: WriteBuffers) -> None:
        with self._lock:
            self._free.append(buffers)


MAX_RUNS = 8  # more runs of adjacent token vectors than this in a write: gathered instead


def _runs(arrays: Sequence[np.ndarray], staging: StagingBuffer) -> list[np.ndarray]:
    """``arrays`` (each (rows, width)) as a few (rows, width) float16 or float32 arrays, in order:
    views spanning the arrays that lie one after another in memory with one float dtype (the rows
    of one Parquet batch do; the caller keeps them alive), or, when they do not form at most
    :data:`MAX_RUNS` such runs, all of them gathered into ``staging``."""
    dtype = np.result_type(*arrays)
    if dtype not in (np.float16, np.float32):
        dtype = np.dtype(np.float32)
    width = arrays[0].shape[1]
    runs: list[tuple[np.ndarray, int]] = []  # (first array, rows)
    end = -1
    for array in arrays:
        if array.dtype != dtype or not array.flags.c_contiguous:
            return [staging.gather(arrays, dtype)]
        if array.ctypes.data == end:
            runs[-1] = (runs[-1][0], runs[-1][1] + len(array))
        elif len(runs) == MAX_RUNS:
            return [staging.gather(arrays, dtype)]
        else:
            runs.append((array, len(array)))
        end = array.ctypes.data + array.nbytes
    strides = (width * dtype.itemsize, dtype.itemsize)
    return [
        np.lib.stride_tricks.as_strided(first, (rows, width), strides, writeable=False)
        for first, rows in runs
    ]


def check_codecs(codecs: Sequence[str]) -> tuple[str, ...]:
    """Distinct known codec names, at least one."""
    if isinstance(codecs, str) or not codecs or len(set(codecs)) != len(codecs):
        raise InvalidInput(f"codecs must be a list of distinct names, at least one; got {codecs!r}")
    unknown = [name for name in codecs if name not in CODECS]
    if unknown:
        raise InvalidInput(f"unknown codec {unknown[0]!r}: choose from {', '.join(CODECS)}")
    return tuple(codecs)


def _write_synced(fd: int, rows: np.ndarray, first: int) -> None:
    """Write ``rows`` (n, width) uint8 at row ``first`` of the file ``fd`` and sync it (a short
    write, e.g. past 2 GiB, is continued)."""
    data = memoryview(np.ascontiguousarray(rows)).cast("B")
    offset, done = first * rows.shape[1], 0
    while done < len(data):
        written = os.pwrite(fd, data[done:], offset + done)
        if written <= 0:
            raise OSError(f"could not write token codes at byte {offset + done}")
        done += written
    os.fdatasync(fd)


def _write_ranges(path: Path, codes: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> None:
    """The code rows ``starts[i] : starts[i] + counts[i]`` one after another into ``path``
    (neighbouring ranges copied together), synced."""
    with open(path, "wb") as out:
        run_start = run_end = 0
        for start, count in [*zip(starts.tolist(), counts.tolist(), strict=True), (-1, 0)]:
            if start != run_end:  # the run ends (the sentinel ends the last one)
                out.writelines(  # a bounded slice at a time
                    codes[chunk : min(run_end, chunk + COPY_ROWS)].tobytes()
                    for chunk in range(run_start, run_end, COPY_ROWS)
                )
                run_start = start
            run_end = start + count
        out.flush()
        os.fsync(out.fileno())


def _swap_compacted(path: Path, codecs: list[str], set_rows: SetRows) -> None:
    """Finish a compaction whose files are complete: the store learns every entry's row, then
    the files are renamed into place (the entry table last) and the marker removed."""
    table = path / f"{ENTRIES_FILE}{COMPACTED}"
    if table.exists():
        entries = np.fromfile(table, dtype=ENTRY)
        set_rows({str(uuid.UUID(bytes=bytes(e["point"]))): row for row, e in enumerate(entries)})
        for name in codecs:
            compacted = path / f"{name}.codes{COMPACTED}"
            if compacted.exists():
                os.replace(compacted, path / f"{name}.codes")
        os.replace(table, path / ENTRIES_FILE)
        directory = os.open(path, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    (path / COMPACT_FILE).unlink()


def _save_codec(path: Path, codec: Codec) -> None:
    """``codec``'s state in ``path/codec.<name>``, written under another name and renamed into
    place (a folder that exists is complete)."""
    staging = path / f".codec.{codec.name}.writing"
    shutil.rmtree(staging, ignore_errors=True)
    save_codec(codec, staging)
    for written in staging.iterdir():
        with open(written, "rb") as file:
            os.fsync(file.fileno())
    os.replace(staging, path / f"codec.{codec.name}")


def _read_codec(path: Path, name: str) -> Codec | None:
    """The codec saved in ``path/codec.<name>`` (None: not trained yet)."""
    folder = path / f"codec.{name}"
    return read_codec(folder) if folder.is_dir() else None


def _batches(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[first, last)`` runs of entries holding about ``budget`` tokens each (at
    least one entry a run)."""
    ends = np.cumsum(counts)
    runs, first = [], 0
    while first < len(counts):
        base = ends[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(ends, base + budget, side="right")))
        runs.append((first, last))
        first = last
    return runs


def _top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best (index, score) of ``scores``, best first, skipping -inf."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]
