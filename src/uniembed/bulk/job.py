"""The bulk job: records in chunks → embed → written before the next chunk is read; resume skips
ids already written."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, runtime_checkable

from uniembed.core.iteration import chunked
from uniembed.errors import InvalidInput, UniembedError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from uniembed.embedder import Embedder
    from uniembed.inputs.items import Item
    from uniembed.models.base import PatchGrid
    from uniembed.plans import EncodeOptions


from uniembed.bulk.outputs import (
    MULTIVECTOR_FORMAT,
    EmbeddedRecord,
    Entry,
    ErrorLog,
    JsonlWriter,
    PartsWriter,
    Writer,
    errors_path_for,
    ids_path,
    infer_format,
    manifest_path_for,
    parts_dir,
)
from uniembed.bulk.records import ReadOptions, Record, iter_records

DEFAULT_BATCH_SIZE = 256
DUPLICATE_ID = "duplicate id: an earlier item has the same id"
VECTORS = ("single", "multi", "both")
Vectors = Literal["single", "multi", "both"]


@dataclass(frozen=True)
class BulkOptions:
    """What to compute for every item (the API's fields) and how many records make a chunk.

    ``vectors``: ``single`` vectors, ``multi``-vectors, or ``both`` from one forward pass, written
    with what an index stores beside them (document id, page, patch grid, metadata, text) so that
    ``uniembed index --from-embeddings`` can index them without the model running again.
    """

    task: str | None = None
    dimensions: int | None = None
    vectors: Vectors = "single"
    truncate: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInput(f"batch size must be at least 1, got {self.batch_size}")
        if self.vectors not in VECTORS:
            raise InvalidInput(f"vectors must be one of {', '.join(VECTORS)}; got {self.vectors!r}")


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


ProgressCallback = Callable[[int, int], None]  # (items done in a chunk, tokens in it)


@dataclass
class ChunkResult:
    """What became of one chunk of records."""

    records: int  # records read into the chunk
    rows: list[EmbeddedRecord]
    failures: list[tuple[str, str]]  # (id, message)
    skipped: int  # items already in the output


@runtime_checkable
class ChunkEncoder(Protocol):
    """Turns chunks of records into embeddings, in order: the embedder of this process
    (:class:`LocalEncoder`) or an actor pool on a Ray cluster (:mod:`uniembed.distributed.bulk`)."""

    @property
    def model_name(self) -> str: ...

    def check(self, options: BulkOptions) -> None:
        """Fail before any input is read when ``options`` do not fit the model."""

    def encode(
        self, chunks: Iterator[list[Record]], options: BulkOptions, done: set[str]
    ) -> Iterator[ChunkResult]:
        """One result per chunk, in the chunks' order; ``done`` ids are skipped, not encoded."""
        ...


class LocalEncoder:
    """Encodes chunks one after the other with an embedder in this process."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def model_name(self) -> str:
        return self.embedder.info.name

    def check(self, options: BulkOptions) -> None:
        check_embed_options(self.embedder, options)

    def encode(
        self, chunks: Iterator[list[Record]], options: BulkOptions, done: set[str]
    ) -> Iterator[ChunkResult]:
        records_seen: set[str] = set()
        pages_seen: set[str] = set()
        for chunk in chunks:
            screened = screen(chunk, done, records_seen)
            encoded = process_chunk(self.embedder, screened.to_encode, options, done, pages_seen)
            yield screened.merged(encoded)


def embed_files(
    inputs: Sequence[Path],
    output: Path,
    embedder: Embedder | ChunkEncoder,
    options: BulkOptions = BulkOptions(),
    *,
    read: ReadOptions = ReadOptions(),  # noqa: B008 (frozen dataclass: immutable default)
    fmt: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    errors_file: Path | None = None,
    on_progress: ProgressCallback | None = None,
    on_start: Callable[[], None] | None = None,
    report: BulkReport | None = None,
) -> BulkReport:
    """Embed every record of ``inputs`` into ``output``; see the module docstring.

    ``embedder`` is an :class:`~uniembed.embedder.Embedder` (the job runs in this process) or any
    :class:`ChunkEncoder` (e.g. :class:`uniembed.distributed.RayEncoder`): reading, resume, writing
    and the errors file stay here either way. ``report`` (optional) is filled in as the job goes, so
    a caller still has the counts when the job is interrupted (``KeyboardInterrupt``) or a chunk
    fails on the model. ``on_start`` is called once the options and the output are checked, before
    the first record is read (a progress bar starts there, so none shows before such an error);
    ``on_progress`` after each chunk with its items (embedded, failed or skipped) and tokens.
    """
    encoder = embedder if isinstance(embedder, ChunkEncoder) else LocalEncoder(embedder)
    fmt = infer_format(output, fmt)
    errors_file = errors_file or errors_path_for(output)
    encoder.check(options)
    _prepare_output(output, fmt, resume=resume, overwrite=overwrite)
    writer = _make_writer(output, fmt, encoder.model_name, options)
    report = report or BulkReport(output, errors_file)
    report.output, report.errors_file = output, errors_file
    done = writer.done_ids()
    errors_file.unlink(missing_ok=True)  # items that failed before are tried again
    errors = ErrorLog(errors_file)
    started = time.perf_counter()
    if on_start is not None:
        on_start()
    try:
        chunks = chunked(iter_records(inputs, read), options.batch_size)
        for result in encoder.encode(chunks, options, done):
            if result.rows:
                writer.write(result.rows)
            errors.add(result.failures)
            tokens = sum(r.tokens for r in result.rows)
            report.embedded += len(result.rows)
            report.failed += len(result.failures)
            report.skipped += result.skipped
            report.tokens += tokens
            if on_progress is not None:
                on_progress(len(result.rows) + len(result.failures) + result.skipped, tokens)
        writer.finish()
        report.finished = True
    finally:
        errors.close()
        writer.close()
        report.seconds = time.perf_counter() - started
    return report


def check_embed_options(embedder: Embedder, options: BulkOptions) -> None:
    """Fail before reading any input when the options do not fit the model (the library's rules)."""
    embedder.resolve_tasks(options.task, 1)
    embedder.check_options(_encode_options(options))


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
            f"{leftovers[0]} already exists; pass --resume to continue that job (skipping ids "
            "already written) or --overwrite to start again"
        )
    output.parent.mkdir(parents=True, exist_ok=True)


def _make_writer(output: Path, fmt: str, model_name: str, options: BulkOptions) -> Writer:
    manifest = {
        "format": fmt,
        "model": model_name,
        "task": options.task,
        "dimensions": options.dimensions,
        "vectors": options.vectors,
    }
    if fmt == "parquet" and options.vectors in ("multi", "both"):
        manifest["multivector_format"] = MULTIVECTOR_FORMAT  # a resume cannot mix layouts
    if fmt == "jsonl":
        return JsonlWriter(output, manifest)
    return PartsWriter(output, fmt, manifest)


@dataclass
class Screened:
    """A chunk sorted before any model runs (locally, or on the driver of a Ray job): what to
    encode, what failed, how many items were written already."""

    records: int
    to_encode: list[Record]
    failures: list[tuple[str, str]]
    skipped: int

    def merged(self, encoded: ChunkResult) -> ChunkResult:
        """The chunk's result: what screening found plus what encoding ``to_encode`` gave."""
        return ChunkResult(
            self.records,
            encoded.rows,
            self.failures + encoded.failures,
            self.skipped + encoded.skipped,
        )


def screen(chunk: Sequence[Record], done: set[str], seen: set[str]) -> Screened:
    """Take out what needs no model: texts and images already written (skipped) and repeated record
    ids (failures; ``seen`` is updated). A PDF's pages are checked once it is read
    (:func:`process_chunk`)."""
    screened = Screened(len(chunk), [], [], 0)
    for record in chunk:
        if record.id in seen:
            screened.failures.append((record.id, DUPLICATE_ID))
        elif record.id in done and record.error is None and not record.is_pdf:
            screened.skipped += 1
        else:
            screened.to_encode.append(record)
        seen.add(record.id)
    return screened


def process_chunk(
    embedder: Embedder,
    chunk: Sequence[Record],
    options: BulkOptions,
    done: set[str],
    seen: set[str],
) -> ChunkResult:
    """Parse records :func:`screen` left (texts and images already written are gone), skip a PDF's
    finished pages (``done``) and repeated item ids (``seen``, updated), encode."""
    entries: list[_Pending] = []
    failures: list[tuple[str, str]] = []
    skipped = 0
    for record in chunk:
        for page, (item_id, item, error) in enumerate(_parse_record(record), 1):
            if item_id in seen:
                failures.append((item_id, DUPLICATE_ID))
            elif item_id in done:
                skipped += 1
            elif error is not None:
                failures.append((item_id, error))
            else:
                entries.append(_Pending(item_id, item, record, page if record.is_pdf else None))
            seen.add(item_id)
    rows, encode_failures = _encode_entries(embedder, entries, options)
    return ChunkResult(len(chunk), rows, failures + encode_failures, skipped)


class _Pending(NamedTuple):
    """An item to encode: its id, the parsed item, the record it came from and its page (PDFs)."""

    id: str
    item: Item
    record: Record
    page: int | None


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
    embedder: Embedder, entries: list[_Pending], options: BulkOptions
) -> tuple[list[EmbeddedRecord], list[tuple[str, str]]]:
    """Encode a chunk in one plan; when planning fails, find the bad items one by one."""
    if not entries:
        return [], []
    encode_options = _encode_options(options)
    failures: list[tuple[str, str]] = []
    try:
        plan = embedder.plan([e.item for e in entries], options.task, encode_options)
    except UniembedError:
        entries, failures = _split_bad_entries(embedder, entries, options.task, encode_options)
        if not entries:
            return [], failures
        plan = embedder.plan([e.item for e in entries], options.task, encode_options)
    result = embedder.run(plan)
    if result.multivectors is None:
        rows = [
            EmbeddedRecord(e.id, _numpy(vector), tokens)
            for e, vector, tokens in zip(entries, result.embeddings, result.token_counts)
        ]
        return rows, failures
    grids = result.patch_grids or [None] * len(entries)
    rows = [
        EmbeddedRecord(e.id, _numpy(vector), tokens, _numpy(multi), _entry(e, grid))
        for e, vector, tokens, multi, grid in zip(
            entries, result.embeddings, result.token_counts, result.multivectors, grids
        )
    ]
    return rows, failures


def _entry(pending: _Pending, grid: PatchGrid | None) -> Entry:
    """What an index stores beside the vectors of an item (``--vectors both``)."""
    from uniembed.inputs.items import TextItem

    text = pending.item.text if isinstance(pending.item, TextItem) else None
    kind = "page" if pending.page is not None else "text" if text is not None else "image"
    return Entry(
        document=pending.record.id,
        page=pending.page,
        kind=kind,
        grid=None if grid is None else (grid.start, grid.height, grid.width),
        metadata=dict(pending.record.metadata or {}),
        text=text,
    )


def _numpy(vector: torch.Tensor) -> np.ndarray:
    return vector.detach().float().cpu().numpy()


def _split_bad_entries(
    embedder: Embedder, entries: list[_Pending], task: str | None, options: EncodeOptions
) -> tuple[list[_Pending], list[tuple[str, str]]]:
    good: list[_Pending] = []
    bad: list[tuple[str, str]] = []
    for entry in entries:
        try:
            embedder.plan([entry.item], task, options)
        except UniembedError as exc:
            bad.append((entry.id, _without_index(exc.message)))
        else:
            good.append(entry)
    return good, bad


def _encode_options(options: BulkOptions) -> EncodeOptions:
    from uniembed.plans import EncodeOptions

    return EncodeOptions(
        output=options.vectors, dimensions=options.dimensions, truncate=options.truncate
    )
