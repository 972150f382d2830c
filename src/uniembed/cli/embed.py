"""``uniembed embed``: the command line of bulk jobs, with a progress bar and a summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from uniembed.errors import InvalidInput, UniembedError

if TYPE_CHECKING:
    from uniembed.embedder import Embedder


from uniembed.bulk.job import DEFAULT_BATCH_SIZE, BulkOptions, BulkReport, ChunkEncoder, embed_files
from uniembed.bulk.outputs import errors_path_for, infer_format
from uniembed.bulk.records import ReadOptions, count_items
from uniembed.cli.options import Device, Dtype, Model, Progress, Ray
from uniembed.cli.progress import RateColumn
from uniembed.models import DEFAULT_MODEL

Loader = Callable[..., "Embedder"]


def make_embed_command(loader: Loader | None = None) -> Callable[..., None]:
    """The ``uniembed embed`` command, loading models with ``loader`` (default
    :func:`uniembed.load`).

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
        model: Model = DEFAULT_MODEL,
        device: Device = None,
        dtype: Dtype = None,
        task: Annotated[
            str | None, typer.Option(help="API task name, e.g. retrieval.passage.")
        ] = None,
        dimensions: Annotated[
            int | None, typer.Option(help="Matryoshka size of single vectors.")
        ] = None,
        vectors: Annotated[
            str,
            typer.Option(
                help="single vectors, multi-vectors (JSONL/Parquet), or both from one forward "
                "with page numbers, patch grids and metadata (what `uniembed index "
                "--from-embeddings` reads)."
            ),
        ] = "single",
        multivector: Annotated[
            bool, typer.Option("--multivector", hidden=True, help="Deprecated: --vectors multi.")
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
        progress: Progress = True,
        ray: Ray = None,
        ray_actors: Annotated[
            int, typer.Option(help="With --ray: actors, each with its own model.")
        ] = 1,
        ray_cpus_per_actor: Annotated[
            float, typer.Option(help="With --ray: CPUs each actor reserves.")
        ] = 1.0,
        ray_gpus_per_actor: Annotated[
            float, typer.Option(help="With --ray: GPUs each actor reserves.")
        ] = 0.0,
    ) -> None:
        """Embed files into JSONL, Parquet or NumPy, with resume and an errors file; with --ray,
        on a Ray actor pool."""
        from rich.console import Console

        console = Console(stderr=True, soft_wrap=True)
        try:
            options = BulkOptions(
                task, dimensions, _vectors(vectors, multivector), truncate, batch_size
            )
            read = ReadOptions(whole_file, id_key, text_key)
            if resume and overwrite:
                raise InvalidInput("--resume and --overwrite exclude each other")
            infer_format(output, fmt)
            if ray is None:
                embedder: Embedder | ChunkEncoder = _load(loader, model, device, dtype)
            else:
                embedder = _ray_encoder(
                    ray, model, device, dtype, ray_actors, ray_cpus_per_actor, ray_gpus_per_actor
                )
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


def _vectors(vectors: str, multivector: bool) -> Any:
    """``--vectors``, or ``multi`` for the deprecated ``--multivector``."""
    if multivector and vectors not in ("single", "multi"):
        raise InvalidInput(f"--multivector means --vectors multi; drop it or --vectors {vectors}")
    return "multi" if multivector else vectors


def _load(loader: Loader | None, model: str, device: str | None, dtype: str | None) -> Embedder:
    if loader is None:
        from uniembed.loader import load as loader
    return loader(model, device=device, dtype=dtype)


def _ray_encoder(
    address: str,
    model: str,
    device: str | None,
    dtype: str | None,
    actors: int,
    cpus: float,
    gpus: float,
) -> ChunkEncoder:
    """The job's encoder on a Ray actor pool; the model is loaded by the actors, not here."""
    from uniembed.distributed.bulk import ActorPool, ModelSpec, RayEncoder

    return RayEncoder(ModelSpec(model, device, dtype), ActorPool(actors, cpus, gpus), address)


def _run_with_progress(
    console: Any,
    show: bool,
    inputs: Sequence[Path],
    output: Path,
    embedder: Embedder | ChunkEncoder,
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
    bar = Progress(*columns, console=console, disable=not show)
    job = bar.add_task("embed", total=count_items(inputs, read) if show else None, tokens=0)

    def advance(items: int, tokens: int) -> None:
        bar.update(job, advance=items, tokens=bar.tasks[job].fields["tokens"] + tokens)

    try:  # the bar starts once the job has checked its output: no empty bar before an error
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
            on_start=bar.start,
            report=report,
        )
    finally:
        bar.stop()


def _summary(report: BulkReport) -> str:
    rate = report.embedded / report.seconds if report.seconds > 0 else 0.0
    lines = [
        (
            f"embedded {report.embedded} items ({report.tokens} tokens, {rate:.1f} items/s) "
            f"into {report.output}"
        ),
        f"skipped {report.skipped} items already in the output" if report.skipped else "",
        f"[red]{report.failed} items failed[/red]; see {report.errors_file}"
        if report.failed
        else "",
    ]
    return "\n".join(line for line in lines if line)


embed_command = make_embed_command()
