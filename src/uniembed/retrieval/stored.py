"""Stored embeddings as index entries: what :meth:`Index.add_vectors` checks, and the reader of the
Parquet files that ``uniembed embed --vectors both`` writes (``uniembed index --from-embeddings``).

An entry is one text, image or PDF page: its document id, single vector, multi-vector, and what the
index stores beside them (page, patch grid, metadata, text, thumbnail). Every argument is checked
before anything is written, and each error names the entry (``entry 3 (document 'a')``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniembed.core.checks import all_finite, is_int_at_least
from uniembed.core.vectors import normalize, to_float16
from uniembed.errors import InvalidInput
from uniembed.models.base import PatchGrid
from uniembed.retrieval.documents import check_id, check_metadata, check_text

KINDS = ("text", "image", "page")
PARQUET_MANIFEST_KEY = "uniembed"  # the key `uniembed embed` writes its manifest under
READ_BATCH_ROWS = 64  # Parquet rows read at a time (64 pages of 800 float16 vectors: 13 MB)
WRITE_TOKENS = 131_072  # token vectors written (and synced) together: 32 MiB of 128-d float16
WRITE_ENTRIES = 4096  # entries written together when they have few or no token vectors


@dataclass(frozen=True)
class StoredEntry:
    """One checked entry: vectors as tensors (a multi-vector float16 or float32, as given), the
    rest as the index stores it."""

    doc_id: str
    kind: str
    page: int | None
    dense: torch.Tensor  # (dimensions,) cut to the index's Matryoshka size
    multi: torch.Tensor | None  # (tokens, multivector_dim)
    grid: PatchGrid | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    thumbnail: str | None = None


@dataclass(frozen=True)
class VectorBatch:
    """Arguments of one :meth:`Index.add_vectors` call, read from a file (whole documents)."""

    ids: list[str]
    embeddings: list[np.ndarray]
    multivectors: list[np.ndarray] | None
    metadata: list[dict[str, Any] | None]
    pages: list[int | None]
    patch_grids: list[tuple[int, int, int] | None]
    texts: list[str | None]
    kinds: list[str | None]  # None: inferred (see stored_entries)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Index.add_vectors`."""
        return {
            "metadata": self.metadata,
            "pages": self.pages,
            "patch_grids": self.patch_grids,
            "texts": self.texts,
            "kinds": self.kinds,
        }


# ----------------------------------------------------------------- checking
def stored_entries(
    ids: Sequence[str],
    embeddings: Any,
    multivectors: Sequence[Any] | None,
    *,
    dimensions: int,
    multivector_dim: int | None,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
    pages: Sequence[int | None] | None = None,
    patch_grids: Sequence[Any] | None = None,
    texts: Sequence[str | None] | None = None,
    kinds: Sequence[str | None] | None = None,
    thumbnails: Sequence[str | None] | None = None,
    multivectors_finite: bool = False,
) -> list[StoredEntry]:
    """Check every argument of :meth:`Index.add_vectors` and build the entries (see there).

    Single vectors wider than ``dimensions`` are cut and re-normalised (Matryoshka, as ``encode``
    with ``dimensions`` does); narrower ones are refused. ``multivectors_finite``: their values
    were checked where they were read (:func:`read_embeddings`), so they are not read again.
    """
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidInput("ids must be a list of document ids, one per entry")
    count = len(ids)
    dense = _dense(embeddings, count, dimensions)
    multi = _multivectors(multivectors, count, multivector_dim, not multivectors_finite)
    extras = {
        "metadata": metadata,
        "pages": pages,
        "patch_grids": patch_grids,
        "texts": texts,
        "kinds": kinds,
        "thumbnails": thumbnails,
    }
    for name, values in extras.items():
        if values is not None and len(values) != count:
            raise InvalidInput(f"got {len(values)} {name} for {count} ids")
    entries = []
    for n, doc_id in enumerate(ids):
        try:
            check_id(doc_id)
        except InvalidInput as error:
            raise type(error)(f"entry {n}: {error.message}") from None
        where = f"entry {n} (document {doc_id!r:.80})"
        rows = multi[n] if multi is not None else None
        grid = _grid(patch_grids[n] if patch_grids else None, rows, where)
        page = _page(pages[n] if pages else None, where)
        entries.append(
            StoredEntry(
                doc_id=doc_id,
                kind=_kind(kinds[n] if kinds else None, page, grid, where),
                page=page,
                dense=dense[n],
                multi=rows,
                grid=grid,
                metadata=_metadata(metadata[n] if metadata else None, where),
                text=_optional_str(texts[n] if texts else None, "text", where),
                thumbnail=_optional_str(thumbnails[n] if thumbnails else None, "thumbnail", where),
            )
        )
    _check_documents(entries)
    return entries


def _dense(embeddings: Any, count: int, dimensions: int) -> torch.Tensor:
    """(count, dimensions) float32, cut and re-normalised when wider."""
    try:
        if isinstance(embeddings, (list, tuple)) and embeddings:
            vectors = torch.stack([_tensor(v) for v in embeddings])
        else:
            vectors = _tensor(embeddings)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidInput(
            f"embeddings must be one vector per entry of equal size: {error}"
        ) from None
    if vectors.dim() != 2 or vectors.shape[0] != count:
        raise InvalidInput(
            f"embeddings must be (entries, dimensions) with {count} entries, got shape "
            f"{tuple(vectors.shape)}"
        )
    if vectors.shape[1] < dimensions:
        raise InvalidInput(
            f"embeddings have {vectors.shape[1]} dimensions; this index stores {dimensions} "
            "(embed with a larger --dimensions, or none)"
        )
    _check_finite(vectors, "embeddings")
    if vectors.shape[1] > dimensions:
        vectors = normalize(vectors[:, :dimensions])
    return vectors


def _multivectors(
    multivectors: Sequence[Any] | None, count: int, dim: int | None, check_finite: bool = True
) -> list[torch.Tensor] | None:
    if dim is None:
        if multivectors is not None:
            raise InvalidInput("this index stores single vectors only; give no multivectors")
        return None
    if multivectors is None:
        raise InvalidInput(f"this index stores multi-vectors: give one (tokens, {dim}) per entry")
    if len(multivectors) != count:
        raise InvalidInput(f"got {len(multivectors)} multivectors for {count} ids")
    checked = []
    for n, value in enumerate(multivectors):
        try:
            rows = _tensor(value, keep_half=True)  # stored as float16 anyway: no round trip
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"entry {n}: a multi-vector must be numbers ({error})") from None
        if rows.dim() != 2 or rows.shape[0] < 1 or rows.shape[1] != dim:
            raise InvalidInput(
                f"entry {n}: a multi-vector must be (tokens ≥ 1, {dim}), got shape "
                f"{tuple(rows.shape)}"
            )
        if check_finite:
            _check_finite(rows, f"entry {n}: the multi-vector")
        checked.append(rows)
    return checked


def _tensor(value: Any, keep_half: bool = False) -> torch.Tensor:
    """float32 tensor of an array, tensor or nested list (read-only arrays are copied); float16
    stays float16 with ``keep_half``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value if keep_half and value.dtype == torch.float16 else value.float()
    array = np.asarray(value)
    if not (keep_half and array.dtype == np.float16):
        array = np.asarray(value, np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _check_finite(values: torch.Tensor, what: str) -> None:
    if not all_finite(values.numpy()):  # numpy: one thread, no pool to wake per page
        raise InvalidInput(f"{what} hold NaN or infinite values")


def _grid(value: Any, rows: torch.Tensor | None, where: str) -> PatchGrid | None:
    """A patch grid from a :class:`PatchGrid` or ``(start, height, width)``, inside the rows."""
    if value is None:
        return None
    if isinstance(value, PatchGrid):
        value = (value.start, value.height, value.width)
    parts = list(value) if isinstance(value, (list, tuple)) else []
    if len(parts) != 3 or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise InvalidInput(f"{where}: a patch grid is (start, height, width), got {value!r}")
    grid = PatchGrid(*parts)
    if grid.start < 0 or grid.height < 1 or grid.width < 1:
        raise InvalidInput(f"{where}: patch grid {value!r} needs start ≥ 0, height and width ≥ 1")
    if rows is None or grid.stop > rows.shape[0]:
        have = 0 if rows is None else rows.shape[0]
        raise InvalidInput(
            f"{where}: patch grid {tuple(parts)} covers rows up to {grid.stop}, but the "
            f"multi-vector has {have}"
        )
    return grid


def _page(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not is_int_at_least(value):
        raise InvalidInput(f"{where}: a page number is an integer ≥ 1, got {value!r}")
    return value


def _kind(value: str | None, page: int | None, grid: PatchGrid | None, where: str) -> str:
    """The given kind, or ``page`` with a page number, ``image`` with a patch grid, ``text``."""
    if value is None:
        return "page" if page is not None else "image" if grid is not None else "text"
    if value not in KINDS:
        raise InvalidInput(f"{where}: kind must be one of {', '.join(KINDS)}, got {value!r}")
    if (value == "page") != (page is not None):
        raise InvalidInput(f"{where}: kind 'page' and a page number go together")
    return value


def _metadata(value: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """What :meth:`Index.add` accepts as metadata (:func:`check_metadata`), or ``{}``."""
    if value is None:
        return {}
    check_metadata(value, where)
    return dict(value)


def _optional_str(value: Any, name: str, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{where}: {name} must be a string")
    if value is not None:
        check_text(value, f"{where}: its {name}")
    return value


def _check_documents(entries: list[StoredEntry]) -> None:
    """A document's entries are consecutive (they are written together) and its pages distinct."""
    finished: set[str] = set()
    pages: set[int | None] = set()
    for n, entry in enumerate(entries):
        if n and entry.doc_id != entries[n - 1].doc_id:
            finished.add(entries[n - 1].doc_id)
            pages = set()
        if entry.doc_id in finished:
            raise InvalidInput(
                f"entry {n}: document {entry.doc_id!r} appears twice in one add (a document's "
                "entries must be consecutive)"
            )
        if entry.page in pages:
            what = f"page {entry.page}" if entry.page is not None else "an entry without a page"
            raise InvalidInput(f"entry {n}: document {entry.doc_id!r} has {what} twice")
        pages.add(entry.page)


def batch_is_full(entries: int, tokens: int, items: int | None = None) -> bool:
    """Whether a batch of whole documents is written now: it holds ``items`` entries (default
    :data:`WRITE_ENTRIES`) or :data:`WRITE_TOKENS` token vectors."""
    return entries >= (items or WRITE_ENTRIES) or tokens >= WRITE_TOKENS


def document_batches(
    entries: list[StoredEntry], items: int | None = None
) -> Iterator[list[StoredEntry]]:
    """Whole documents (consecutive entries of one), a batch closed once it holds ``items``
    entries (default :data:`WRITE_ENTRIES`) or :data:`WRITE_TOKENS` token vectors: one store
    operation and one sync each, so a batch must be large for ingest to run at the disk's speed."""
    batch: list[StoredEntry] = []
    tokens = 0
    for n, entry in enumerate(entries):
        batch.append(entry)
        tokens += len(entry.multi) if entry.multi is not None else 0
        last_of_document = n + 1 == len(entries) or entries[n + 1].doc_id != entry.doc_id
        if last_of_document and batch_is_full(len(batch), tokens, items):
            yield batch
            batch, tokens = [], 0
    if batch:
        yield batch


# ----------------------------------------------------------------- reading Parquet
def count_stored_documents(path: Path) -> int:
    """Documents in a file of stored embeddings (a progress bar's total; 0 when it cannot be read:
    reading it reports why)."""
    try:
        table = _parquet().ParquetFile(path)
        names = table.schema_arrow.names
        column = "document" if "document" in names else "id"
        values = table.read(columns=[column]).column(column)
    except (OSError, ValueError, KeyError):
        return 0
    return len(values.unique())


def embeddings_manifest(path: Path) -> dict[str, Any]:
    """What ``uniembed embed`` recorded in the file (model, task, dimensions, vectors); ``{}``
    for a file written by something else."""
    pq = _parquet()
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path}: not a Parquet file ({error})") from None
    raw = metadata.get(PARQUET_MANIFEST_KEY.encode())
    return json.loads(raw) if raw else {}


def read_embeddings(
    path: Path,
    *,
    with_multivectors: bool,
    multivector_dim: int | None = None,
    batch_rows: int = READ_BATCH_ROWS,
    batch_entries: int = WRITE_ENTRIES,
) -> Iterator[VectorBatch]:
    """Batches of whole documents from a Parquet file of ``uniembed embed`` (``--vectors both``,
    or ``single`` for an index without multi-vectors), read ``batch_rows`` rows at a time, each
    batch closed at ``batch_entries`` entries or :data:`WRITE_TOKENS` token vectors (what
    :func:`document_batches` writes together).

    Columns: ``id`` and ``embedding`` (required), ``embeddings`` (required ``with_multivectors``:
    float16 rows as bytes, as ``uniembed embed`` writes them, ``multivector_dim`` wide or as the
    ``tokens`` column counts them, or list<list<float>>),
    and optionally ``document`` (default: the id), ``page``, ``kind``, ``grid``, ``metadata``
    (JSON text) and ``text``. A document's rows must be consecutive.
    """
    pq = _parquet()
    try:
        # pre_buffer (pyarrow's default) keeps every column chunk iter_batches has read until the
        # reader closes: a file's whole size in memory. Without it memory stays a batch's.
        reader = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path}: not a Parquet file ({error})") from None
    names = set(reader.schema_arrow.names)
    needed = ["id", "embedding", *(["embeddings"] if with_multivectors else [])]
    missing = [name for name in needed if name not in names]
    if missing:
        raise InvalidInput(
            f"{path} has no {', '.join(missing)} column: write it with `uniembed embed --vectors "
            "both` (single and multi-vectors, with page numbers and patch grids)"
        )
    optional = ["tokens", "document", "page", "kind", "grid", "metadata", "text"]
    columns = needed + [name for name in optional if name in names]
    pending: list[dict[str, Any]] = []
    finished: set[str] = set()
    row = tokens = 0
    for record_batch in reader.iter_batches(batch_size=max(1, batch_rows), columns=columns):
        for entry in _rows(record_batch, path, row, multivector_dim):
            if pending and entry["document"] != pending[-1]["document"]:
                finished.add(pending[-1]["document"])
                if batch_is_full(len(pending), tokens, batch_entries):
                    yield _batch(pending, with_multivectors)
                    pending, tokens = [], 0
            if entry["document"] in finished:
                raise InvalidInput(
                    f"{path} row {row}: document {entry['document']!r} appeared before; the rows "
                    "of a document must be consecutive"
                )
            pending.append(entry)
            tokens += len(entry["embeddings"]) if entry["embeddings"] is not None else 0
            row += 1
    if pending:
        yield _batch(pending, with_multivectors)


def _rows(
    batch: Any, path: Path, first_row: int, multivector_dim: int | None
) -> Iterator[dict[str, Any]]:
    """The rows of a record batch as dicts, vectors as numpy arrays."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    dense = _matrix(columns["embedding"], path, "embedding", first_row)
    multi = (
        _matrices(columns["embeddings"], columns.get("tokens"), path, first_row, multivector_dim)
        if "embeddings" in columns
        else None
    )
    plain = {
        name: columns[name].to_pylist()
        for name in ("id", "document", "page", "kind", "grid", "metadata", "text")
        if name in columns
    }
    for n in range(batch.num_rows):
        entry_id = plain["id"][n]
        metadata = plain["metadata"][n] if "metadata" in plain else None
        yield {
            "document": plain["document"][n] if "document" in plain else entry_id,
            "embedding": dense[n],
            "embeddings": multi[n] if multi is not None else None,
            "page": plain["page"][n] if "page" in plain else None,
            "kind": plain["kind"][n] if "kind" in plain else None,
            "grid": plain["grid"][n] if "grid" in plain else None,
            "metadata": _json_object(metadata, path, first_row + n),
            "text": plain["text"][n] if "text" in plain else None,
        }


def _matrix(column: Any, path: Path, name: str, first_row: int) -> np.ndarray:
    """A list<float> column of equal-length lists → (rows, dim) float32."""
    if column.null_count:
        raise InvalidInput(f"{path}: column {name!r} has empty values (rows from {first_row})")
    lengths = column.value_lengths().to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        raise InvalidInput(f"{path}: column {name!r} holds vectors of different sizes")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), int(lengths[0]) if len(lengths) else 0)


def _matrices(
    column: Any, tokens: Any, path: Path, first_row: int, dim: int | None
) -> list[np.ndarray]:
    """The ``embeddings`` column → one (tokens, dim) float16 array per row (the index keeps
    float16): float16 bytes as ``uniembed embed`` writes them (views of the column's buffer), or
    list<list<float>> (earlier files, other tools), rounded in one cast for the batch."""
    if column.null_count:
        raise InvalidInput(f"{path}: column 'embeddings' has empty values (rows from {first_row})")
    if _pyarrow().types.is_binary(column.type) or _pyarrow().types.is_large_binary(column.type):
        return _half_rows(column, _counts(tokens, path, first_row), path, first_row, dim)
    rows = _matrix(column.flatten(), path, "embeddings", first_row)
    with warnings.catch_warnings():  # a read-only Arrow buffer: the cast only reads it
        warnings.simplefilter("ignore", UserWarning)
        half = to_float16(torch.from_numpy(rows)).numpy()
    _check_half(half, path, first_row)
    counts = column.value_lengths().to_numpy()
    return np.split(half, np.cumsum(counts)[:-1]) if len(counts) else []


def _counts(tokens: Any, path: Path, first_row: int) -> np.ndarray | None:
    """The ``tokens`` column (each multi-vector's rows) as int64, when the file has one."""
    if tokens is None:
        return None
    counts = tokens.to_numpy(zero_copy_only=False)
    if tokens.null_count or not np.issubdtype(counts.dtype, np.integer):
        raise InvalidInput(f"{path}: column 'tokens' must hold integers (rows from {first_row})")
    return counts.astype(np.int64)


def _half_rows(
    column: Any, tokens: np.ndarray | None, path: Path, first_row: int, dim: int | None
) -> list[np.ndarray]:
    """A binary column of float16 rows (row-major, little-endian) → (tokens, dim) arrays, views of
    Arrow's buffer (the token files encode them where they lie; a copy of the batch where Arrow's
    buffer is read-only, so that no page is copied on its own later); ``dim`` is the index's, or
    the file's own from its ``tokens`` column (each row's count)."""
    offsets, data = column.buffers()[1:]
    wide = _pyarrow().types.is_large_binary(column.type)
    ends = np.frombuffer(offsets, np.int64 if wide else np.int32)[column.offset :][
        : len(column) + 1
    ]
    sizes = np.diff(ends)
    if not len(sizes):
        return []
    if dim is None:
        if tokens is None or (tokens <= 0).any():
            raise InvalidInput(f"{path}: column 'embeddings' holds bytes but no 'tokens' count")
        dim = max(1, int(sizes[0]) // (2 * int(tokens[0])))
    wanted = 2 * dim * tokens if tokens is not None else sizes
    bad = (sizes <= 0) | (sizes % (2 * dim) != 0) | (sizes != wanted)
    if bad.any():
        row = int(np.argmax(bad))
        counted = f" for {int(tokens[row])} tokens" if tokens is not None else ""
        raise InvalidInput(
            f"{path} row {first_row + row}: column 'embeddings' is not whole {dim}-d float16 rows "
            f"({int(sizes[row])} bytes{counted})"
        )
    values = np.frombuffer(data, dtype="<f2")[ends[0] // 2 : ends[-1] // 2]
    _check_half(values, path, first_row)
    rows = values.reshape(-1, dim) if values.flags.writeable else values.reshape(-1, dim).copy()
    return np.split(rows, np.cumsum(sizes // (2 * dim))[:-1])


def _check_half(values: np.ndarray, path: Path, first_row: int) -> None:
    if not all_finite(values):
        raise InvalidInput(
            f"{path}: column 'embeddings' holds values that are not finite or beyond float16's "
            f"range (±65504) (rows from {first_row})"
        )


def _json_object(text: str | None, path: Path, row: int) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{path} row {row}: metadata is not JSON ({error})") from None
    return value


def _batch(entries: list[dict[str, Any]], with_multivectors: bool) -> VectorBatch:
    return VectorBatch(
        ids=[e["document"] for e in entries],
        embeddings=[e["embedding"] for e in entries],
        multivectors=[e["embeddings"] for e in entries] if with_multivectors else None,
        metadata=[e["metadata"] for e in entries],
        pages=[e["page"] for e in entries],
        patch_grids=[tuple(e["grid"]) if e["grid"] is not None else None for e in entries],
        texts=[e["text"] for e in entries],
        kinds=[e["kind"] for e in entries],
    )


def _parquet() -> Any:
    from uniembed._optional import require

    return require("pyarrow.parquet", "parquet", "reading stored embeddings")


def _pyarrow() -> Any:
    from uniembed._optional import require

    return require("pyarrow", "parquet", "reading stored embeddings")


__all__ = [
    "StoredEntry",
    "VectorBatch",
    "count_stored_documents",
    "document_batches",
    "embeddings_manifest",
    "read_embeddings",
    "stored_entries",
]
