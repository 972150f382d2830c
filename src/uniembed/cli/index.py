"""``uniembed index`` and ``uniembed search``: build an index from files and query it from a
shell."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from uniembed.cli.options import Device, Dtype, IndexModel, Progress
from uniembed.errors import InvalidInput, UniembedError


def index_command(
    location: Annotated[
        str,
        typer.Argument(help="Index directory (embedded Qdrant) or http(s)://host:port/collection."),
    ],
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files and folders to add: texts (.txt, .md), images, PDFs (one entry per page)."
        ),
    ] = None,
    model: IndexModel = None,
    jsonl: Annotated[
        list[Path] | None,
        typer.Option(
            help=(
                'JSONL file of documents: {"id": …, "text"|"image"|"pdf": …, "metadata": {…}} '
                "per line."
            )
        ),
    ] = None,
    from_embeddings: Annotated[
        list[Path] | None,
        typer.Option(
            help="Parquet file of `uniembed embed --vectors both` to index without running the "
            "model again; repeat for several."
        ),
    ] = None,
    delete: Annotated[
        list[str] | None, typer.Option(help="Document id to delete; repeat for several.")
    ] = None,
    dimensions: Annotated[
        int | None, typer.Option(help="New index: Matryoshka size of the single vectors.")
    ] = None,
    pool_factor: Annotated[
        int, typer.Option(help="New index: store about 1/N of each multi-vector's rows.")
    ] = 1,
    field: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "New index: metadata field to index for filters, as "
                "name:keyword|integer|float|bool."
            )
        ),
    ] = None,
    codec: Annotated[
        list[str] | None,
        typer.Option(
            help="New embedded index: how token vectors are kept on disk (float16, int8, binary, "
            "residual); repeat for several, the first is scanned (default: float16 and binary)."
        ),
    ] = None,
    muvera: Annotated[
        bool, typer.Option(help="New index: keep MUVERA encodings for mode muvera.")
    ] = False,
    device: Device = None,
    dtype: Dtype = None,
    batch_items: Annotated[
        int | None,
        typer.Option(
            help="Entries encoded and written together (default: 16 through the model; stored "
            "embeddings up to 131,072 token vectors or 4,096 entries).",
            min=1,
        ),
    ] = None,
    optimize: Annotated[
        bool, typer.Option(help="Build the vector indexes (HNSW) after adding.")
    ] = True,
    progress: Progress = True,
) -> None:
    """Create or open an index; add files, folders and JSONL documents; delete documents by id."""
    try:
        fields = dict(_field(spec) for spec in field or [])
        index = _open_or_create(
            location,
            model,
            device,
            dtype,
            dimensions=dimensions,
            pool_factor=pool_factor,
            metadata_fields=fields,
            muvera=muvera,
            **({"codecs": tuple(codec)} if codec else {}),
        )
        with index:
            if delete:
                index.delete(delete)
                typer.echo(f"deleted {len(delete)} document id(s)", err=True)
            started = time.perf_counter()
            stored = from_embeddings or []
            added = _add_all(index, paths or [], jsonl or [], stored, batch_items, progress)
            if added and optimize:
                index.optimize()
            if added:
                seconds = time.perf_counter() - started
                typer.echo(
                    f"added {added} document(s) in {seconds:.1f} s ({added / seconds:.2f}/s)",
                    err=True,
                )
            typer.echo(json.dumps(index.info()))
    except UniembedError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as error:  # e.g. an unknown dtype name from the loader
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None


def search_command(
    location: Annotated[
        str, typer.Argument(help="Index directory or http(s)://host:port/collection.")
    ],
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    image: Annotated[
        Path | None, typer.Option(help="Search with this image instead of a text.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    mode: Annotated[
        str | None, typer.Option(help="dense, multivector, two-stage (default), muvera or binary.")
    ] = None,
    candidates: Annotated[
        int | None, typer.Option(help="First-stage candidates for two-stage, muvera and binary.")
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter", help='JSON filter, e.g. \'{"metadata.lang": "en", "page": {"lte": 3}}\'.'
        ),
    ] = None,
    model: IndexModel = None,
    device: Device = None,
    dtype: Dtype = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON lines.")
    ] = False,
) -> None:
    """Search an index by text or image; prints score, id, page and a snippet per result."""
    from uniembed.retrieval.index import Index

    try:
        if (query is None) == (image is None):
            raise InvalidInput("give a text query or --image, not both")
        spec = _json_object(filter, "--filter") if filter else None
        with Index.open(location, model, device=device, dtype=dtype) as index:
            target: Any = query if image is None else {"image": str(image)}
            hits = index.search(target, k=k, mode=mode, candidates=candidates, filter=spec)
        for hit in hits:
            if as_json:
                typer.echo(json.dumps(hit.to_json()))
            else:
                where = f" p.{hit.page}" if hit.page is not None else ""
                snippet = " ".join((hit.text or hit.source or hit.kind).split())[:80]
                typer.echo(f"{hit.score:10.4f}  {hit.id}{where}  {snippet}")
    except UniembedError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as error:  # e.g. an unknown dtype name from the loader
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None


def _open_or_create(
    location: str, model: str | None, device: str | None, dtype: str | None, **create: Any
) -> Any:
    """The index at ``location``; a new one (with ``model``, default v4) when there is none."""
    from uniembed.models import DEFAULT_MODEL
    from uniembed.retrieval.index import Index
    from uniembed.retrieval.stores import store_exists

    if store_exists(location):
        return Index.open(location, model, device=device, dtype=dtype)
    return Index.create(location, model or DEFAULT_MODEL, device=device, dtype=dtype, **create)


def _add_all(
    index: Any,
    paths: list[Path],
    jsonl: list[Path],
    stored: list[Path],
    batch_items: int | None,
    show: bool,
) -> int:
    """Add every path, JSONL file and file of stored embeddings (``--from-embeddings``) under a
    progress bar of documents written; the count."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from uniembed.cli.progress import RateColumn
    from uniembed.retrieval.documents import count_documents
    from uniembed.retrieval.index import DEFAULT_BATCH_ITEMS
    from uniembed.retrieval.stored import count_stored_documents

    total = sum(count_documents(p) for p in paths) + sum(_count_lines(f) for f in jsonl)
    total += sum(count_stored_documents(f) for f in stored)
    columns = (
        TextColumn("indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn("documents"),
        TimeElapsedColumn(),
    )
    console = Console(stderr=True, soft_wrap=True)
    with Progress(*columns, console=console, disable=not show or not total) as bar:
        task = bar.add_task("index", total=total)
        items = batch_items or DEFAULT_BATCH_ITEMS  # through the model
        for path in paths:
            index.add_path(path, batch_items=items, on_written=_advance(bar, task))
        for file in jsonl:
            documents = _jsonl_documents(file)
            index.add_documents(documents, batch_items=items, on_written=_advance(bar, task))
        for file in stored:
            index.add_embeddings_file(file, batch_items=batch_items, on_written=_advance(bar, task))
        return int(bar.tasks[0].completed)


def _advance(bar: Any, task: Any) -> Any:
    return lambda count: bar.advance(task, count)


def _count_lines(file: Path) -> int:
    """Non-empty lines of a JSONL file (0 when it cannot be read: reading it reports why)."""
    try:
        with open(file, "rb") as lines:
            return sum(1 for line in lines if line.strip())
    except OSError:
        return 0


def _jsonl_documents(file: Path) -> Iterator[Any]:
    """Documents of a JSONL file; errors name the file and line."""
    from uniembed.core.files import read_jsonl
    from uniembed.retrieval.documents import documents_from_inputs

    for where, record in read_jsonl(file):
        value = {k: record[k] for k in ("text", "image", "pdf") if k in record}
        doc_id = str(record.get("id") or f"{file.name}:{where.rpartition(':')[2]}")
        try:
            yield from documents_from_inputs([value], [doc_id], [record.get("metadata")])
        except UniembedError as error:  # a limit (InputTooLarge) keeps its type
            raise type(error)(f"{where}: {error.message}") from None


def _field(spec: str) -> tuple[str, str]:
    name, _, kind = spec.partition(":")
    if not name or not kind:
        raise InvalidInput(f"--field {spec!r}: write name:keyword|integer|float|bool")
    return name, kind


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{option} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object")
    return value
