"""``uniembed eval``: ``retrieval`` (quality, bytes and latency per setting) and ``alignment``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from uniembed.cli.options import Device, Dtype, Model, Progress, command_app
from uniembed.models import DEFAULT_MODEL

eval_app = command_app(
    no_args_is_help=True,
    help="Measure retrieval quality and cross-modal alignment on your own data.",
)


@eval_app.command("retrieval")
def retrieval_command(
    data: Annotated[
        str, typer.Argument(help="A BEIR, JSONL or ViDoRe/MTEB dataset folder, or a hub id.")
    ],
    model: Model = DEFAULT_MODEL,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--setting",
            "-s",
            help="Setting spec (repeat): dense[:DIM|:all], dense-int8[:DIM], dense-binary[:DIM], "
            "maxsim, maxsim-fp16, maxsim-pool:F, maxsim-binary[:N], two-stage[:DIM[:N]], "
            "muvera[:N], search:MODE[:N] (the index itself: dense, multivector, two-stage, "
            "binary), all. "
            "Default: all.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Qrels split.")] = "test",
    k: Annotated[
        list[int] | None, typer.Option("--k", help="Cut-off (repeat). Default: 1 5 10 100.")
    ] = None,
    primary: Annotated[
        str | None, typer.Option(help="Metric of the chart and Pareto front (default ndcg@10).")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="One task for queries and corpus (e.g. text-matching).")
    ] = None,
    query_task: Annotated[str, typer.Option(help="Task of the queries.")] = "retrieval.query",
    corpus_task: Annotated[str, typer.Option(help="Task of the corpus.")] = "retrieval.passage",
    max_tokens: Annotated[
        int | None, typer.Option(help="Cut longer texts to this many tokens.")
    ] = None,
    max_pixels: Annotated[
        int | None, typer.Option(help="Pixels per image (default: the model's).")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Items per cached chunk (default 256 texts, 16 images).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Report folder (default ./eval-<dataset>)."),
    ] = None,
    runs: Annotated[
        bool, typer.Option(help="Also write each setting's run as a TREC run file.")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Encodings cache (default ~/.cache/uniembed/eval).")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Read and write the encodings cache.")] = True,
    device: Device = None,
    dtype: Dtype = None,
    progress: Progress = True,
) -> None:
    """Score every setting from one cached encoding: metrics, bytes per item, query latency."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    with _errors_reported(console):
        from uniembed.evaluation.cache import EncodingCache
        from uniembed.evaluation.encode import EncodeSettings
        from uniembed.evaluation.readers import load_dataset
        from uniembed.evaluation.report import render_table, write_report
        from uniembed.evaluation.sweep import EvalConfig, evaluate_retrieval

        config = EvalConfig(
            settings=setting or ["all"],
            k_values=k or [1, 5, 10, 100],
            primary=primary,
            query_task=task or query_task,
            corpus_task=task or corpus_task,
            encode=EncodeSettings(max_tokens, max_pixels, chunk_size),
        )
        config.check()
        dataset = load_dataset(data, split)
        console.print(
            f"{dataset.name}: {len(dataset.query_ids)} judged queries "
            f"({dataset.skipped_queries} without judgements skipped), "
            f"{len(dataset.corpus_ids)} items"
        )
        embedder = _load(console, model, device, dtype)
        with _progress_bars(console, progress) as bars:
            report = evaluate_retrieval(
                embedder,
                dataset,
                config,
                cache=EncodingCache(cache_dir) if cache else None,
                progress=bars,
            )
        console.print(_encoding_summary(report.encoding))
        folder = output or Path(f"eval-{dataset.name}")
        written = write_report(report, folder, runs=runs)
        table_console = Console()
        table_console.width = max(table_console.width, 120)
        table_console.print(render_table(report, _table_metrics(config)))
        console.print(
            f"wrote {', '.join(str(p) for p in written[:2])}"
            + (f" and {len(written) - 2} run files" if runs else "")
        )


@eval_app.command("alignment")
def alignment_command(
    pairs: Annotated[
        Path,
        typer.Argument(help="Image-caption pairs: JSONL ({'image', 'text'}) or a datasets folder."),
    ],
    model: Model = DEFAULT_MODEL,
    image_task: Annotated[
        str, typer.Option(help="Task (adapter) of the images.")
    ] = "retrieval.passage",
    text_task: Annotated[str, typer.Option(help="Task of the captions.")] = "retrieval.query",
    dimensions: Annotated[int | None, typer.Option(help="Matryoshka size (default: full).")] = None,
    sample: Annotated[
        int | None, typer.Option(help="Score this many random pairs (the v4 report: 1000).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the numbers as JSON here.")
    ] = None,
    device: Device = None,
    dtype: Dtype = None,
    progress: Progress = True,
) -> None:
    """Mean cosine of matching and of random image-caption pairs, and the modality gap."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    with _errors_reported(console):
        from uniembed.core.files import write_text
        from uniembed.evaluation.alignment import evaluate_alignment, read_pairs

        loaded = read_pairs(pairs)
        embedder = _load(console, model, device, dtype)
        count = min(sample, len(loaded)) if sample else len(loaded)
        with _progress_bars(console, progress) as bars:
            result = evaluate_alignment(
                embedder,
                loaded,
                image_task=image_task,
                text_task=text_task,
                dimensions=dimensions,
                sample=sample,
                seed=seed,
                on_progress=bars("encoding images and captions", 2 * count),
            )
        text = json.dumps(result.to_dict(), indent=2)
        if output is not None:
            write_text(output, text + "\n")
        typer.echo(text)


def _encoding_summary(encoding: dict[str, Any]) -> str:
    """What encoding cost this run: items read from the cache and items run through the model.

    >>> from uniembed.evaluation.encode import EncodingStats
    >>> _encoding_summary({"queries": EncodingStats(3, 9, 0.1, 1, 1, 3),
    ...                    "corpus": EncodingStats(5, 20, 0.2, 1, 1, 5)})
    'read 8 items (3 queries, 5 corpus) from the cache: no forward pass ran'
    """
    read = sum(stats.cached_items for stats in encoding.values())
    total = sum(stats.items for stats in encoding.values())
    sides = ", ".join(f"{stats.cached_items} {side}" for side, stats in encoding.items())
    if read == total:
        return f"read {read} items ({sides}) from the cache: no forward pass ran"
    if read:
        return f"read {read} items ({sides}) from the cache; encoded the other {total - read}"
    return f"encoded {total} items"


def _table_metrics(config: Any) -> list[str]:
    """The table's metrics: nDCG, recall, MRR and MAP at 10 (or the largest cut-off), and the
    primary metric."""
    k = 10 if 10 in config.k_values else max(config.k_values)
    names = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}", f"map@{k}"]
    return names if config.primary_metric in names else [config.primary_metric, *names]


def _load(console: Any, model: str, device: str | None, dtype: str | None) -> Any:
    from uniembed.loader import load

    console.print(f"loading {model} …")
    return load(model, device=device, dtype=dtype)


@contextlib.contextmanager
def _errors_reported(console: Any) -> Iterator[None]:
    from uniembed.errors import UniembedError

    try:
        yield
    except UniembedError as error:
        console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: the chunks encoded so far are cached (unless "
            "--no-cache); rerun the same command to continue where it stopped"
        )
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _progress_bars(
    console: Any, show: bool
) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A factory of rich progress bars: ``bars(label, total)`` adds one and returns its advance."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from uniembed.cli.progress import RateColumn

    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn("items"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as bars:

        def add(label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(label, total=total)
            return lambda count: bars.advance(task, count)

        yield add
