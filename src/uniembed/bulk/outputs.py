"""Writing bulk outputs: JSONL appended per chunk, Parquet / NumPy as atomic parts merged at the
end, and the errors file. Every writer records its options so that a resumed job cannot mix them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from uniembed.core.files import atomic_path, write_text
from uniembed.errors import InvalidInput

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".npy": "numpy"}
PARQUET_MANIFEST_KEY = "uniembed"  # Parquet schema metadata: the job's manifest (model, task, …)
PARQUET_HINT = "Parquet output needs pyarrow: pip install uniembed[parquet]"
MULTIVECTOR_FORMAT = "float16"  # Parquet's `embeddings`: float16 rows as bytes (docs/bulk.md)
ADOPTED_ROWS_PER_PART = 4096  # a finished NumPy output reopened by --resume: rows per part file


@dataclass(frozen=True)
class Entry:
    """What an index stores beside an item's vectors (``--vectors both``): the document it belongs
    to, its page (PDFs, from 1), ``kind`` (text | image | page), its patch grid (start, height,
    width) among the multi-vector rows, the record's JSON metadata and, for texts, the text."""

    document: str
    page: int | None
    kind: str
    grid: tuple[int, int, int] | None
    metadata: dict[str, Any]
    text: str | None


@dataclass(frozen=True)
class EmbeddedRecord:
    """One finished embedding: ``vector`` is (dim,) or, for multi-vectors, (tokens, dim); with
    ``--vectors both`` ``vector`` is the single vector, ``multivector`` (tokens, dim) and ``entry``
    are set."""

    id: str
    vector: np.ndarray
    tokens: int
    multivector: np.ndarray | None = None
    entry: Entry | None = None


class Writer(Protocol):
    """Where a job's rows go; every ``write`` is durable when it returns."""

    def done_ids(self) -> set[str]: ...

    def write(self, rows: Sequence[EmbeddedRecord]) -> None: ...

    def finish(self) -> None:
        """Called once after the last chunk: turn partial output into the final output."""

    def close(self) -> None:
        """Release open files; called after ``finish`` and when a job stops early."""


def infer_format(output: Path, fmt: str | None = None) -> str:
    """The output format from ``fmt`` or the file extension.

    >>> infer_format(Path("out.parquet"))
    'parquet'
    """
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise InvalidInput(f"unknown format {fmt!r}; use one of jsonl, parquet, numpy")
        return fmt
    if output.suffix.lower() in FORMATS:
        return FORMATS[output.suffix.lower()]
    raise InvalidInput(
        f"cannot tell the format of {output.name!r} from its extension; "
        "use .jsonl, .parquet or .npy, or give --format jsonl|parquet|numpy"
    )


def ids_path(output: Path) -> Path:
    """The sidecar holding the ids of a NumPy output: ``vectors.npy`` → ``vectors.ids.json``."""
    return output.with_suffix(".ids.json")


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def errors_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def manifest_path_for(output: Path) -> Path:
    """The JSONL output's record of the options it was made with: ``out.jsonl.manifest.json``."""
    return output.with_name(output.name + ".manifest.json")


def check_manifest(saved: dict[str, Any], current: dict[str, Any], output: Path) -> None:
    """Refuse to resume ``output`` with options other than those it was started with.

    >>> check_manifest({"task": "a"}, {"task": "b"}, Path("out.jsonl"))
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: cannot resume out.jsonl: options differ from the first run
    (task: 'a' before, 'b' now)
    """
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: {old!r} before, {new!r} now" for k, (old, new) in changed.items())
        raise InvalidInput(f"cannot resume {output}: options differ from the first run ({detail})")


class JsonlWriter:
    """Appends ``{"id": …, "embedding": […]}`` (``"embeddings"`` for multi-vectors) lines; with
    ``--vectors both`` each line has both and the :class:`Entry` fields.

    ``<output>.manifest.json`` records the options (model, task, dimensions, multi-vector), so that
    a resumed job cannot append vectors made with different ones.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.key = "embeddings" if manifest.get("vectors") == "multi" else "embedding"
        self._file = None

    def done_ids(self) -> set[str]:
        manifest = manifest_path_for(self.path)
        if manifest.exists():
            check_manifest(
                json.loads(manifest.read_text(encoding="utf-8")), self.manifest, self.path
            )
        if not self.path.exists():
            return set()
        _drop_torn_tail(self.path)
        with self.path.open(encoding="utf-8") as lines:
            return {_line_id(line, self.path, n) for n, line in enumerate(lines, 1) if line.strip()}

    def write(self, rows: Sequence[EmbeddedRecord]) -> None:
        if self._file is None:
            manifest = manifest_path_for(self.path)
            if not manifest.exists():
                manifest.write_text(json.dumps(self.manifest), encoding="utf-8")
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(self._line(row) for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _line(self, row: EmbeddedRecord) -> str:
        if row.entry is None or row.multivector is None:
            vector = json.dumps(row.vector.tolist())
            return f'{{"id": {json.dumps(row.id)}, "{self.key}": {vector}}}\n'
        record = {
            "id": row.id,
            **asdict(row.entry),
            "embedding": row.vector.tolist(),
            "embeddings": row.multivector.tolist(),
        }
        return json.dumps(record) + "\n"

    def finish(self) -> None:
        """Nothing to do: the appended lines already are the output."""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left half-written by a crash, so the file holds whole lines only."""
    with path.open("rb+") as file:
        data = file.read()
        if data and not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)


def _line_id(line: str, path: Path, number: int) -> str:
    try:
        return str(json.loads(line)["id"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInput(
            f"{path} line {number} is not a record this tool wrote ({exc}); "
            "fix or remove the file, or pass --overwrite to start again"
        ) from exc


class PartsWriter:
    """Writes each chunk as an atomic part file in ``<output>.parts/`` and merges them at the end.

    The parts folder also holds ``manifest.json`` (format and embedding options) so that a resumed
    job cannot mix vectors made with different options.
    """

    def __init__(self, output: Path, fmt: str, manifest: dict[str, Any]) -> None:
        self.output = output
        self.fmt = fmt
        self.manifest = manifest
        self.folder = parts_dir(output)
        self.suffix = ".parquet" if fmt == "parquet" else ".npz"
        self._next_part: int | None = None  # found once: a folder listing per chunk adds up
        if fmt == "numpy" and manifest.get("vectors") != "single":
            raise InvalidInput(
                f"--vectors {manifest.get('vectors')} needs JSONL or Parquet output: a NumPy array "
                "cannot hold one matrix per item"
            )
        if fmt == "parquet":
            _pyarrow()

    # -- state
    def done_ids(self) -> set[str]:
        if not self.folder.exists() and self._final_exists():
            self._adopt_final_output()
        if not self.folder.exists():
            return set()
        self._check_manifest()
        done: set[str] = set()
        for part in self._parts():
            done.update(self._read_part(part)[0])
        return done

    def _final_exists(self) -> bool:
        return self.output.exists() and (self.fmt == "parquet" or ids_path(self.output).exists())

    def _check_manifest(self) -> None:
        path = self.folder / "manifest.json"
        if not path.exists():
            return
        check_manifest(json.loads(path.read_text(encoding="utf-8")), self.manifest, self.output)

    def _adopt_final_output(self) -> None:
        """Turn a finished output back into a part, so that --resume can add new items to it."""
        self._ensure_folder()
        if self.fmt == "parquet":
            os.replace(self.output, self.folder / "part-000000.parquet")
            return
        vectors = np.load(self.output, mmap_mode="r")  # copied a part at a time, never whole
        ids = json.loads(ids_path(self.output).read_text(encoding="utf-8"))
        for start in range(0, len(ids), ADOPTED_ROWS_PER_PART):
            rows = slice(start, start + ADOPTED_ROWS_PER_PART)
            self._write_part([EmbeddedRecord(i, v, 0) for i, v in zip(ids[rows], vectors[rows])])
        del vectors
        self.output.unlink()
        ids_path(self.output).unlink()

    def _ensure_folder(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            write_text(self.folder / "manifest.json", json.dumps(self.manifest))

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob(f"part-*{self.suffix}"))

    # -- writing
    def write(self, rows: Sequence[EmbeddedRecord]) -> None:
        self._ensure_folder()
        self._write_part(rows)

    def _write_part(self, rows: Sequence[EmbeddedRecord]) -> None:
        if self._next_part is None:
            parts = self._parts()
            self._next_part = int(parts[-1].name[5:11]) + 1 if parts else 0
        index, self._next_part = self._next_part, self._next_part + 1
        final = self.folder / f"part-{index:06d}{self.suffix}"
        with atomic_path(final) as tmp:
            if self.fmt == "parquet":
                table = self._table(rows)
                _pyarrow()[1].write_table(table, tmp, **parquet_options(table.schema.names))
            else:
                ids = np.array([r.id for r in rows], dtype=np.str_)
                with tmp.open("wb") as file:
                    np.savez(file, ids=ids, vectors=_stack([r.vector for r in rows]))

    def _table(self, rows: Sequence[EmbeddedRecord]) -> Any:
        """A part as a table (columns: see docs/bulk.md); the schema carries the manifest."""
        pa = _pyarrow()[0]
        vectors = self.manifest.get("vectors")
        columns: dict[str, Any] = {"id": pa.array([r.id for r in rows], pa.string())}
        if vectors == "both":
            columns.update(_entry_columns(pa, [r.entry for r in rows]))  # type: ignore[misc]
        if vectors in ("single", "both"):
            columns["embedding"] = _vector_column(pa, [r.vector for r in rows])
        matrices = {"multi": [r.vector for r in rows], "both": [r.multivector for r in rows]}
        if vectors in matrices:
            multi: list[np.ndarray] = matrices[vectors]  # type: ignore[assignment]
            columns["tokens"] = pa.array([len(m) for m in multi], pa.int32())
            columns["embeddings"] = _matrix_column(pa, multi)
        metadata = {PARQUET_MANIFEST_KEY: json.dumps(self.manifest)}
        return pa.table(columns).replace_schema_metadata(metadata)

    def _read_part(self, part: Path) -> tuple[list[str], Any]:
        if self.fmt == "parquet":
            table = _pyarrow()[1].read_table(part)
            return table.column("id").to_pylist(), table
        with np.load(part) as data:
            return [str(i) for i in data["ids"]], data["vectors"]

    # -- finishing
    def finish(self) -> None:
        """Merge the parts into ``output`` (atomically) and remove the parts folder."""
        if self.fmt == "parquet":
            self._merge_parquet()
        else:
            self._merge_numpy()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Nothing stays open between parts."""

    def _merge_parquet(self) -> None:
        pq = _pyarrow()[1]
        schema = self._table([]).schema
        options = parquet_options(schema.names)
        with atomic_path(self.output) as tmp, pq.ParquetWriter(tmp, schema, **options) as writer:
            for part in self._parts():
                writer.write_table(self._read_part(part)[1].cast(schema))

    def _merge_numpy(self) -> None:
        """Copy the parts one at a time into a memory-mapped ``.npy``: memory stays one part's."""
        ids: list[str] = []
        widths: set[int] = set()
        for part in self._parts():
            part_ids, vectors = self._read_part(part)
            ids.extend(part_ids)
            widths.update([vectors.shape[1]] if len(vectors) else [])
        if len(widths) > 1:
            raise InvalidInput(
                f"parts in {self.folder} have different vector sizes {sorted(widths)}; "
                "remove the folder and start again"
            )
        width = widths.pop() if widths else 0
        write_text(ids_path(self.output), json.dumps(ids))
        with atomic_path(self.output) as tmp:
            merged = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(len(ids), width)
            )
            start = 0
            for part in self._parts():
                vectors = self._read_part(part)[1]
                merged[start : start + len(vectors)] = vectors
                start += len(vectors)
            merged.flush()
            del merged


def parquet_options(names: Sequence[str]) -> dict[str, Any]:
    """Vector columns written plain: float values do not compress, a dictionary never repeats and
    min/max statistics of vector bytes say nothing, while decoding them costs the reader (plain
    pages read 1.7-2.5x faster than snappy-compressed, dictionary-tried ones; BENCHMARKS.md,
    "Corpus scale"). The other columns keep pyarrow's defaults (snappy, dictionary, statistics)."""
    vectors = {"embedding", "embeddings"}
    others = [name for name in names if name not in vectors]
    return {
        "compression": {name: "none" if name in vectors else "snappy" for name in names},
        "use_dictionary": others,
        "write_statistics": others,
    }


def _entry_columns(pa: Any, entries: Sequence[Entry]) -> dict[str, Any]:
    """The :class:`Entry` fields as columns (``metadata`` as JSON text, ``grid`` as 3 ints)."""
    return {
        "document": pa.array([e.document for e in entries], pa.string()),
        "page": pa.array([e.page for e in entries], pa.int32()),
        "kind": pa.array([e.kind for e in entries], pa.string()),
        "grid": pa.array([e.grid for e in entries], pa.list_(pa.int32())),
        "metadata": pa.array([json.dumps(e.metadata) for e in entries], pa.string()),
        "text": pa.array([e.text for e in entries], pa.string()),
    }


def _vector_column(pa: Any, vectors: Sequence[np.ndarray]) -> Any:
    """list<float32>, built from one flat buffer (no Python floats)."""
    return _list_array(pa, vectors, pa.array(_flat(vectors, 1)))


def _matrix_column(pa: Any, matrices: Sequence[np.ndarray]) -> Any:
    """large_binary: each item's (tokens, dim) multi-vector as its float16 rows, row-major and
    little-endian (:data:`MULTIVECTOR_FORMAT`), built from one flat buffer. An index stores float16
    anyway; the bytes are half of float32's and Parquet reads them ~10× faster than nested lists."""
    import torch

    from uniembed.core.checks import all_finite
    from uniembed.core.vectors import to_float16

    half = to_float16(torch.from_numpy(_flat(matrices, 2))).numpy()
    if not all_finite(half):
        raise InvalidInput("a multi-vector holds values beyond float16's range (±65504)")
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([m.size * 2 for m in matrices], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(half.astype("<f2", copy=False))]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(matrices), buffers)


def _list_array(pa: Any, items: Sequence[np.ndarray], values: Any) -> Any:
    return pa.ListArray.from_arrays(_offsets(pa, [len(item) for item in items]), values)


def _offsets(pa: Any, lengths: Any) -> Any:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.array(offsets)


def _flat(arrays: Sequence[np.ndarray], ndim: int) -> np.ndarray:
    if not arrays:
        return np.zeros(0, np.float32)
    if any(a.ndim != ndim for a in arrays):
        raise ValueError(f"expected arrays of {ndim} dimensions")
    return np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float32, copy=False)


def _stack(vectors: list[np.ndarray]) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)


def _pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or an error that names the extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise InvalidInput(PARQUET_HINT) from exc
    return pyarrow, pyarrow.parquet


class ErrorLog:
    """The errors file: one ``{"id", "error"}`` line per item that could not be embedded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file = None

    def add(self, failures: Sequence[tuple[str, str]]) -> None:
        if not failures:
            return
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write("".join(json.dumps({"id": i, "error": e}) + "\n" for i, e in failures))
        self._file.flush()
        self.count += len(failures)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
