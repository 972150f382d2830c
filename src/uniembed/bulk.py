"""Bulk embedding jobs: files in, JSONL / Parquet / NumPy out (``uniembed embed``).

A job streams *records* (an id and a raw input) from text files, JSONL files and folders of images
and PDFs, embeds them in chunks of ``batch_size`` records and appends every finished chunk to the
output before reading the next. Partial output is therefore always valid, and ``resume`` skips the
ids already written:

* JSONL is appended line by line and flushed after each chunk (a torn last line is dropped on resume);
* Parquet and NumPy outputs are written as one part file per chunk in ``<output>.parts/`` (each part
  appears atomically) and merged into ``<output>`` when the job finishes.

A bad item (empty text, corrupt image, too many tokens, duplicate id) never stops a job: it goes to
the errors file (``<output>.errors.jsonl``: ``{"id": …, "error": …}``) and the job goes on. Items that
failed are tried again on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import numpy as np
import typer
from rich.progress import ProgressColumn
from rich.text import Text

from uniembed.errors import InvalidInput, UniembedError

if TYPE_CHECKING:
    from uniembed.embedder import Embedder, EncodeOptions
    from uniembed.inputs.items import Item

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
PDF_SUFFIXES = frozenset({".pdf"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md"})  # text files picked up inside folders
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".npy": "numpy"}
DEFAULT_BATCH_SIZE = 256
DEFAULT_MODEL = "jinaai/jina-embeddings-v4"
PARQUET_HINT = "Parquet output needs pyarrow: pip install uniembed[parquet]"


# ----------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """One input as read from disk: an id and what to embed, or why it cannot be embedded.

    ``raw`` is a text or a ``{"image": …}`` / ``{"pdf": …}`` dict as :func:`uniembed.inputs.parse.coerce_items`
    accepts it (a local file is a :class:`Path`, read when the record is parsed). A PDF yields one
    item per page, with ids ``<id>#page=N`` (N from 1).
    """

    id: str
    raw: Any = None
    error: str | None = None

    @property
    def is_pdf(self) -> bool:
        return isinstance(self.raw, dict) and "pdf" in self.raw


@dataclass(frozen=True)
class ReadOptions:
    """How files become records."""

    whole_file: bool = False  # a text file is one item instead of one item per line
    id_key: str = "id"  # JSONL: field holding the id
    text_key: str = "text"  # JSONL: field holding the text


def iter_records(paths: Iterable[Path], options: ReadOptions = ReadOptions()) -> Iterator[Record]:
    """Records of files and folders, in order; folders are walked in sorted order.

    Ids: ``<file>:<line>`` for lines of text files, ``<file>`` for whole text files, images and
    (before the page suffix) PDFs, the ``id_key`` value for JSONL lines. A file given directly is
    named as given; a file found in a folder by its path relative to that folder.
    """
    for path in paths:
        if path.is_dir():
            for file in _folder_files(path):
                yield from _file_records(file, file.relative_to(path).as_posix(), options)
        elif path.is_file():
            yield from _file_records(path, path.as_posix(), options)
        else:
            raise InvalidInput(f"input {path} is neither a file nor a folder")


def _folder_files(folder: Path) -> list[Path]:
    known = IMAGE_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES | TEXT_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in known)


def _file_records(path: Path, name: str, options: ReadOptions) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        yield Record(name, {"image": path})
    elif suffix in PDF_SUFFIXES:
        yield Record(name, {"pdf": path})
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_records(path, name, options)
    elif options.whole_file:
        yield _whole_text_record(path, name)
    else:
        yield from _line_records(path, name)


def _whole_text_record(path: Path, name: str) -> Record:
    try:
        return _text_record(name, path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return Record(name, error=f"not UTF-8 text: {exc}")


def _line_records(path: Path, name: str) -> Iterator[Record]:
    number = 0
    try:
        with path.open(encoding="utf-8", newline=None) as lines:
            for number, line in enumerate(lines, 1):
                yield _text_record(f"{name}:{number}", line.rstrip("\n"))
    except UnicodeDecodeError as exc:
        yield Record(f"{name}:{number + 1}", error=f"not UTF-8 text from here on: {exc}")


def _text_record(record_id: str, text: str) -> Record:
    if not text.strip():
        return Record(record_id, error="empty text")
    return Record(record_id, text)


def _jsonl_records(path: Path, name: str, options: ReadOptions) -> Iterator[Record]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield _jsonl_record(line, f"{name}:{number}", path.parent, options)


def _jsonl_record(line: str, where: str, base: Path, options: ReadOptions) -> Record:
    """One JSONL object → a record; errors are reported under ``<file>:<line>`` when there is no id."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(where, error=f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Record(where, error=f"expected a JSON object, got {type(obj).__name__}")
    if obj.get(options.id_key) is None:
        return Record(where, error=f"no {options.id_key!r} field (set the id field with --id-key)")
    record_id = str(obj[options.id_key])
    kinds = [k for k in (options.text_key, "image", "pdf") if obj.get(k) is not None]
    if len(kinds) != 1:
        wanted = f"{options.text_key!r}, 'image' or 'pdf'"
        return Record(record_id, error=f"expected exactly one of {wanted}, found {len(kinds)}")
    value = obj[kinds[0]]
    if kinds[0] == options.text_key:
        if not isinstance(value, str):
            return Record(record_id, error=f"{options.text_key!r} must be a string")
        return _text_record(record_id, value)
    return Record(record_id, {kinds[0]: _local_or_raw(value, base)})


def _local_or_raw(value: Any, base: Path) -> Any:
    """A file path (relative to the JSONL file, or absolute) becomes a :class:`Path`; URLs, base64
    and data URIs pass through."""
    if isinstance(value, str) and "://" not in value and not value.startswith("data:"):
        from uniembed.inputs.images import is_existing_file

        if is_existing_file(str(base / value)):
            return base / value
    return value


def count_records(paths: Iterable[Path], options: ReadOptions = ReadOptions()) -> int:
    """How many records :func:`iter_records` will yield (a progress bar's total), without parsing."""
    total = 0
    for path in paths:
        files = _folder_files(path) if path.is_dir() else [path]
        total += sum(_count_file(file, options) for file in files)
    return total


def _count_file(path: Path, options: ReadOptions) -> int:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES | PDF_SUFFIXES or (
        options.whole_file and suffix not in JSONL_SUFFIXES
    ):
        return 1
    with path.open("rb") as lines:
        if suffix in JSONL_SUFFIXES:
            return sum(1 for line in lines if line.strip())
        return sum(1 for _ in lines)


# ----------------------------------------------------------------- outputs
@dataclass(frozen=True)
class Row:
    """One finished embedding: ``vector`` is (dim,) or, for multi-vectors, (tokens, dim)."""

    id: str
    vector: np.ndarray
    tokens: int


class Writer(Protocol):
    """Where a job's rows go; every ``write`` is durable when it returns."""

    def done_ids(self) -> set[str]: ...

    def write(self, rows: Seq[Row]) -> None: ...

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
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: cannot resume out.jsonl: options differ from the first run (task: 'a' before, 'b' now)
    """
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: {old!r} before, {new!r} now" for k, (old, new) in changed.items())
        raise InvalidInput(f"cannot resume {output}: options differ from the first run ({detail})")


class JsonlWriter:
    """Appends ``{"id": …, "embedding": […]}`` (``"embeddings"`` for multi-vectors) lines.

    ``<output>.manifest.json`` records the options (model, task, dimensions, multi-vector), so that a
    resumed job cannot append vectors made with different ones.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.key = "embeddings" if manifest.get("multivector") else "embedding"
        self._file = None

    def done_ids(self) -> set[str]:
        manifest = manifest_path_for(self.path)
        if manifest.exists():
            check_manifest(json.loads(manifest.read_text(encoding="utf-8")), self.manifest, self.path)
        if not self.path.exists():
            return set()
        _drop_torn_tail(self.path)
        with self.path.open(encoding="utf-8") as lines:
            return {_line_id(line, self.path, n) for n, line in enumerate(lines, 1) if line.strip()}

    def write(self, rows: Seq[Row]) -> None:
        if self._file is None:
            manifest = manifest_path_for(self.path)
            if not manifest.exists():
                manifest.write_text(json.dumps(self.manifest), encoding="utf-8")
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(self._line(row) for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _line(self, row: Row) -> str:
        return f'{{"id": {json.dumps(row.id)}, "{self.key}": {json.dumps(row.vector.tolist())}}}\n'

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
        if fmt == "numpy" and manifest.get("multivector"):
            raise InvalidInput(
                "--multivector needs JSONL or Parquet output: a NumPy array cannot hold one matrix per item"
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
        vectors = np.load(self.output)
        ids = json.loads(ids_path(self.output).read_text(encoding="utf-8"))
        self._write_part(ids, list(vectors), [0] * len(ids))
        self.output.unlink()
        ids_path(self.output).unlink()

    def _ensure_folder(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            (self.folder / "manifest.json").write_text(json.dumps(self.manifest), encoding="utf-8")

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob(f"part-*{self.suffix}"))

    # -- writing
    def write(self, rows: Seq[Row]) -> None:
        self._ensure_folder()
        self._write_part([r.id for r in rows], [r.vector for r in rows], [r.tokens for r in rows])

    def _write_part(self, ids: list[str], vectors: list[np.ndarray], tokens: list[int]) -> None:
        parts = self._parts()
        index = int(parts[-1].name[5:11]) + 1 if parts else 0
        final = self.folder / f"part-{index:06d}{self.suffix}"
        tmp = final.with_name(final.name + ".tmp")
        if self.fmt == "parquet":
            pq = _pyarrow()[1]
            pq.write_table(self._table(ids, vectors), tmp)
        else:
            with tmp.open("wb") as file:
                np.savez(file, ids=np.array(ids, dtype=np.str_), vectors=_stack(vectors))
        os.replace(tmp, final)

    def _table(self, ids: list[str], vectors: list[np.ndarray]) -> Any:
        pa = _pyarrow()[0]
        if self.manifest.get("multivector"):
            column = pa.array([v.tolist() for v in vectors], type=pa.list_(pa.list_(pa.float32())))
            return pa.table({"id": pa.array(ids, pa.string()), "embeddings": column})
        column = pa.array([v.tolist() for v in vectors], type=pa.list_(pa.float32()))
        return pa.table({"id": pa.array(ids, pa.string()), "embedding": column})

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
        tmp = self.output.with_name(self.output.name + ".tmp")
        schema = self._table([], []).schema
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in self._parts():
                writer.write_table(self._read_part(part)[1].cast(schema))
        os.replace(tmp, self.output)

    def _merge_numpy(self) -> None:
        parts = [self._read_part(p) for p in self._parts()]
        widths = {v.shape[1] for _, v in parts if len(v)}
        if len(widths) > 1:
            raise InvalidInput(
                f"parts in {self.folder} have different vector sizes {sorted(widths)}; remove the folder and start again"
            )
        width = widths.pop() if widths else 0
        ids = [i for part_ids, _ in parts for i in part_ids]
        tmp = self.output.with_name(self.output.name + ".tmp.npy")
        merged = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(len(ids), width)
        )
        start = 0
        for _, vectors in parts:
            merged[start : start + len(vectors)] = vectors
            start += len(vectors)
        merged.flush()
        del merged
        sidecar = ids_path(self.output)
        sidecar.with_name(sidecar.name + ".tmp").write_text(json.dumps(ids), encoding="utf-8")
        os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
        os.replace(tmp, self.output)


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

    def add(self, failures: Seq[tuple[str, str]]) -> None:
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


# ----------------------------------------------------------------- the job
@dataclass(frozen=True)
class BulkOptions:
    """What to compute for every item (the API's fields) and how many records make a chunk."""

    task: str | None = None
    dimensions: int | None = None
    multivector: bool = False
    truncate: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInput(f"batch size must be at least 1, got {self.batch_size}")


@dataclass
class BulkReport:
    """Counts of a finished (or interrupted) job."""

    output: Path
    errors_file: Path
    embedded: int = 0  # items written by this run
    skipped: int = 0  # items already in the output (resume)
    failed: int = 0  # items in the errors file
    tokens: int = 0
    seconds: float = 0.0
    finished: bool = False


ProgressCallback = Callable[[int, int], None]  # (records done in a chunk, tokens in it)


def embed_files(
    inputs: Seq[Path],
    output: Path,
    embedder: Embedder,
    options: BulkOptions = BulkOptions(),
    *,
    read: ReadOptions = ReadOptions(),
    fmt: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    errors_file: Path | None = None,
    on_progress: ProgressCallback | None = None,
    report: BulkReport | None = None,
) -> BulkReport:
    """Embed every record of ``inputs`` into ``output``; see the module docstring.

    ``report`` (optional) is filled in as the job goes, so a caller still has the counts when the
    job is interrupted (``KeyboardInterrupt``) or a chunk fails on the model.
    """
    fmt = infer_format(output, fmt)
    errors_file = errors_file or errors_path_for(output)
    _check_embed_options(embedder, options)
    _prepare_output(output, fmt, resume=resume, overwrite=overwrite)
    writer = _make_writer(output, fmt, embedder, options)
    report = report or BulkReport(output, errors_file)
    report.output, report.errors_file = output, errors_file
    done = writer.done_ids()
    errors_file.unlink(missing_ok=True)  # items that failed before are tried again
    errors = ErrorLog(errors_file)
    started = time.perf_counter()
    try:
        seen: set[str] = set()
        for chunk in _chunks(iter_records(inputs, read), options.batch_size):
            rows, failures, skipped = _process_chunk(embedder, chunk, options, done, seen)
            if rows:
                writer.write(rows)
            errors.add(failures)
            report.embedded += len(rows)
            report.failed += len(failures)
            report.skipped += skipped
            report.tokens += sum(r.tokens for r in rows)
            if on_progress is not None:
                on_progress(len(chunk), sum(r.tokens for r in rows))
        writer.finish()
        report.finished = True
    finally:
        errors.close()
        writer.close()
        report.seconds = time.perf_counter() - started
    return report


def _check_embed_options(embedder: Embedder, options: BulkOptions) -> None:
    """Fail before reading any input when the options do not fit the model."""
    embedder.resolve_tasks(options.task, 1)
    embedder.check_dimensions(options.dimensions)
    if options.multivector and embedder.info.multivector_dim is None:
        raise InvalidInput(f"{embedder.info.name} has no multi-vector output; drop --multivector")
    if options.multivector and options.dimensions is not None:
        raise InvalidInput(
            "--dimensions applies to single vectors only; multi-vectors keep their size"
        )


def _prepare_output(output: Path, fmt: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse to touch an earlier job's output unless asked to resume or overwrite it."""
    candidates = [output, parts_dir(output)] + ([ids_path(output)] if fmt == "numpy" else [])
    if fmt == "jsonl":
        candidates.append(manifest_path_for(output))
    leftovers = [path for path in candidates if path.exists()]
    if overwrite:
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    elif leftovers and not resume:
        raise InvalidInput(
            f"{leftovers[0]} already exists; pass --resume to continue that job (skipping ids already "
            "written) or --overwrite to start again"
        )
    output.parent.mkdir(parents=True, exist_ok=True)


def _make_writer(output: Path, fmt: str, embedder: Embedder, options: BulkOptions) -> Writer:
    manifest = {
        "format": fmt,
        "model": embedder.info.name,
        "task": options.task,
        "dimensions": options.dimensions,
        "multivector": options.multivector,
    }
    if fmt == "jsonl":
        return JsonlWriter(output, manifest)
    return PartsWriter(output, fmt, manifest)


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _process_chunk(
    embedder: Embedder, chunk: Seq[Record], options: BulkOptions, done: set[str], seen: set[str]
) -> tuple[list[Row], list[tuple[str, str]], int]:
    """Parse, skip finished ids, encode → (rows, failures as (id, message), items skipped)."""
    entries: list[tuple[str, Item]] = []
    failures: list[tuple[str, str]] = []
    skipped = 0
    for record in chunk:
        for item_id, item, error in _parse_unless_done(record, done):
            if item_id in seen:
                failures.append((item_id, "duplicate id: an earlier item has the same id"))
            elif item_id in done:
                skipped += 1
            elif error is not None:
                failures.append((item_id, error))
            else:
                entries.append((item_id, item))
            seen.add(item_id)
    rows, encode_failures = _encode_entries(embedder, entries, options)
    return rows, failures + encode_failures, skipped


def _parse_unless_done(record: Record, done: set[str]) -> list[tuple[str, Item | None, str | None]]:
    """Like :func:`_parse_record`, but a finished text or image is not even decoded."""
    if record.error is None and not record.is_pdf and record.id in done:
        return [(record.id, None, None)]
    return _parse_record(record)


def _parse_record(record: Record) -> list[tuple[str, Item | None, str | None]]:
    """``(id, item, error)`` per item of a record: one, or one per page of a PDF."""
    from uniembed.inputs.parse import coerce_items  # local: keeps `uniembed --help` fast

    if record.error is not None:
        return [(record.id, None, record.error)]
    try:
        items = coerce_items([record.raw])
    except UniembedError as exc:
        return [(record.id, None, _without_index(exc.message))]
    if record.is_pdf:
        return [(f"{record.id}#page={n}", item, None) for n, item in enumerate(items, 1)]
    return [(record.id, items[0], None)]


def _without_index(message: str) -> str:
    """Drop the input index of one-item calls: the errors file names the id instead.

    >>> _without_index("input 0 has 9 tokens")
    'the item has 9 tokens'
    """
    if message.startswith("input 0 "):
        return "the item " + message.removeprefix("input 0 ")
    return message.removeprefix("input 0: ")


def _encode_entries(
    embedder: Embedder, entries: list[tuple[str, Item]], options: BulkOptions
) -> tuple[list[Row], list[tuple[str, str]]]:
    """Encode a chunk in one plan; when planning fails, find the bad items one by one."""
    if not entries:
        return [], []
    encode_options = _encode_options(options)
    failures: list[tuple[str, str]] = []
    try:
        plan = embedder.plan([item for _, item in entries], options.task, encode_options)
    except UniembedError:
        entries, failures = _split_bad_entries(embedder, entries, options.task, encode_options)
        if not entries:
            return [], failures
        plan = embedder.plan([item for _, item in entries], options.task, encode_options)
    result = embedder.run(plan)
    rows = [
        Row(item_id, vector.detach().float().cpu().numpy(), tokens)
        for (item_id, _), vector, tokens in zip(entries, result.embeddings, result.token_counts)
    ]
    return rows, failures


def _split_bad_entries(
    embedder: Embedder, entries: list[tuple[str, Item]], task: str | None, options: EncodeOptions
) -> tuple[list[tuple[str, Item]], list[tuple[str, str]]]:
    good: list[tuple[str, Item]] = []
    bad: list[tuple[str, str]] = []
    for item_id, item in entries:
        try:
            embedder.plan([item], task, options)
        except UniembedError as exc:
            bad.append((item_id, _without_index(exc.message)))
        else:
            good.append((item_id, item))
    return good, bad


def _encode_options(options: BulkOptions) -> EncodeOptions:
    from uniembed.embedder import EncodeOptions

    return EncodeOptions(
        dimensions=options.dimensions, multivector=options.multivector, truncate=options.truncate
    )


# ----------------------------------------------------------------- command line
Loader = Callable[..., "Embedder"]


def make_embed_command(loader: Loader | None = None) -> Callable[..., None]:
    """The ``uniembed embed`` command, loading models with ``loader`` (default :func:`uniembed.load`).

    Tests pass a loader returning an ``Embedder(FakeModel())``.
    """

    def embed_command(
        inputs: Annotated[
            list[Path],
            typer.Argument(
                help="Text files, JSONL files, or folders of images / PDFs / text files.",
                show_default=False,
            ),
        ],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Output file (.jsonl, .parquet or .npy).")
        ],
        model: Annotated[
            str, typer.Option(help="Model id or local path.", envvar="UNIEMBED_MODEL")
        ] = DEFAULT_MODEL,
        device: Annotated[
            str | None, typer.Option(help="cpu, cuda, cuda:1, mps …", envvar="UNIEMBED_DEVICE")
        ] = None,
        dtype: Annotated[
            str | None, typer.Option(help="float32, bfloat16, float16.", envvar="UNIEMBED_DTYPE")
        ] = None,
        task: Annotated[
            str | None, typer.Option(help="API task name, e.g. retrieval.passage.")
        ] = None,
        dimensions: Annotated[
            int | None, typer.Option(help="Matryoshka size of single vectors.")
        ] = None,
        multivector: Annotated[
            bool, typer.Option("--multivector", help="Multi-vector output (JSONL/Parquet).")
        ] = False,
        truncate: Annotated[
            bool, typer.Option("--truncate", help="Cut over-long texts instead of failing them.")
        ] = False,
        batch_size: Annotated[
            int, typer.Option(help="Items read and written per chunk.")
        ] = DEFAULT_BATCH_SIZE,
        fmt: Annotated[
            str | None,
            typer.Option("--format", help="jsonl, parquet or numpy (default: from --output)."),
        ] = None,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume", help="Continue an interrupted job, skipping ids already written."
            ),
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing output.")
        ] = False,
        whole_file: Annotated[
            bool,
            typer.Option("--whole-file", help="One item per text file instead of one per line."),
        ] = False,
        id_key: Annotated[str, typer.Option(help="JSONL field holding the id.")] = "id",
        text_key: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
        errors: Annotated[
            Path | None, typer.Option(help="Errors file (default: <output>.errors.jsonl).")
        ] = None,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        """Embed files into JSONL, Parquet or NumPy, with resume and an errors file."""
        from rich.console import Console

        console = Console(stderr=True, soft_wrap=True)
        try:
            options = BulkOptions(task, dimensions, multivector, truncate, batch_size)
            read = ReadOptions(whole_file, id_key, text_key)
            if resume and overwrite:
                raise InvalidInput("--resume and --overwrite exclude each other")
            infer_format(output, fmt)
            embedder = _load(loader, model, device, dtype)
        except UniembedError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from None
        report = BulkReport(output, errors or errors_path_for(output))
        try:
            _run_with_progress(
                console,
                progress,
                inputs,
                output,
                embedder,
                options,
                read,
                fmt,
                resume,
                overwrite,
                errors,
                report,
            )
        except UniembedError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print(_summary(report))
            console.print(
                "[yellow]interrupted[/yellow]: rerun the same command with --resume to continue"
            )
            raise typer.Exit(130) from None
        console.print(_summary(report))

    return embed_command


def _load(loader: Loader | None, model: str, device: str | None, dtype: str | None) -> Embedder:
    if loader is None:
        from uniembed import load as loader  # type: ignore[attr-defined,no-redef]
    return loader(model, device=device, dtype=dtype)


def _run_with_progress(
    console: Any,
    show: bool,
    inputs: Seq[Path],
    output: Path,
    embedder: Embedder,
    options: BulkOptions,
    read: ReadOptions,
    fmt: str | None,
    resume: bool,
    overwrite: bool,
    errors: Path | None,
    report: BulkReport,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn("items"),
        RateColumn("tokens"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as bar:
        total = count_records(inputs, read) if show else None
        job = bar.add_task("embed", total=total, tokens=0)

        def advance(records: int, tokens: int) -> None:
            bar.update(job, advance=records, tokens=bar.tasks[job].fields["tokens"] + tokens)

        embed_files(
            inputs,
            output,
            embedder,
            options,
            read=read,
            fmt=fmt,
            resume=resume,
            overwrite=overwrite,
            errors_file=errors,
            on_progress=advance,
            report=report,
        )


class RateColumn(ProgressColumn):
    """``123.4 items/s`` (completed per second) or ``5.6k tokens/s`` (the task's ``tokens`` field)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        amount = task.completed if self.unit == "items" else task.fields.get("tokens", 0)
        elapsed = task.elapsed or 0.0
        rate = amount / elapsed if elapsed > 0 else 0.0
        return Text(f"{_human(rate)} {self.unit}/s", style="progress.data.speed")


def _human(value: float) -> str:
    """A rate with a k/M suffix.

    >>> _human(12345.0)
    '12.3k'
    """
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.1f}"


def _summary(report: BulkReport) -> str:
    rate = report.embedded / report.seconds if report.seconds > 0 else 0.0
    lines = [
        f"embedded {report.embedded} items ({report.tokens} tokens, {rate:.1f} items/s) into {report.output}",
        f"skipped {report.skipped} items already in the output" if report.skipped else "",
        f"[red]{report.failed} items failed[/red]; see {report.errors_file}"
        if report.failed
        else "",
    ]
    return "\n".join(line for line in lines if line)


embed_command = make_embed_command()

__all__ = [
    "BulkOptions",
    "BulkReport",
    "ReadOptions",
    "Record",
    "Row",
    "count_records",
    "embed_command",
    "embed_files",
    "infer_format",
    "iter_records",
    "make_embed_command",
]
