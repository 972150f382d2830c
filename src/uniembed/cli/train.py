"""``uniembed train``: fine-tune a task adapter, or add a task, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from uniembed.cli.options import Device, Dtype, Model, Progress
from uniembed.errors import UniembedError
from uniembed.models import DEFAULT_MODEL
from uniembed.training.config import DEFAULT_TEMPERATURE, LOSSES, TrainConfig

if TYPE_CHECKING:
    from uniembed.training.run import TrainResult

DEFAULTS = TrainConfig(model="", data=Path(), output=Path(), task="x")


def train_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Training pairs: JSONL, Parquet or a datasets folder.",
            show_default=False,
        ),
    ],
    task: Annotated[
        str,
        typer.Option(
            help="Task to train: a new name, or an existing one with --overwrite.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Run folder (checkpoints, adapter, results).", show_default=False
        ),
    ],
    model: Model = DEFAULT_MODEL,
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Evaluation split: BEIR folder or pairs.")
    ] = None,
    eval_split: Annotated[
        str, typer.Option(help="qrels split of a BEIR folder.")
    ] = DEFAULTS.eval_split,
    data_split: Annotated[
        str, typer.Option(help="Split of a datasets folder.")
    ] = DEFAULTS.data_split,
    init_from: Annotated[
        str | None,
        typer.Option(
            help=(
                "Task whose factors start the new one, or 'none' (fresh). Default: the task itself "
                "if it exists, else fresh."
            )
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Continue (and replace on export) an existing task.")
    ] = False,
    symmetric: Annotated[
        bool | None,
        typer.Option(
            "--symmetric/--asymmetric",
            help="One API name for both sides (default: from the task or data).",
            show_default=False,
        ),
    ] = None,
    loss: Annotated[str, typer.Option(help=f"{', '.join(LOSSES)}.")] = DEFAULTS.loss,
    temperature: Annotated[
        float | None,
        typer.Option(
            help=(
                "Softmax temperature (default: the published one of the task, else "
                f"{DEFAULT_TEMPERATURE})."
            )
        ),
    ] = None,
    bidirectional: Annotated[
        bool, typer.Option("--bidirectional", help="InfoNCE in both directions.")
    ] = False,
    joint_weights: Annotated[
        tuple[float, float, float],
        typer.Option(help="Joint loss weights: dense NCE, late NCE, KL."),
    ] = DEFAULTS.joint_weights,
    matryoshka: Annotated[
        bool, typer.Option(help="Weight the dense loss over the trained Matryoshka sizes.")
    ] = DEFAULTS.matryoshka,
    negatives: Annotated[
        int | None, typer.Option(help="Hard negatives per pair (default: all, equal counts).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Pairs per step (in-batch negatives).")
    ] = DEFAULTS.batch_size,
    mini_batch_size: Annotated[
        int | None,
        typer.Option(
            help=(
                "Cached (GradCache) mini-batches of this many rows: a large batch on little memory."
            )
        ),
    ] = None,
    gradient_accumulation: Annotated[
        int, typer.Option(help="Batches per optimiser step.")
    ] = DEFAULTS.gradient_accumulation,
    learning_rate: Annotated[
        float, typer.Option("--lr", help="Peak learning rate.")
    ] = DEFAULTS.learning_rate,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay.")
    ] = DEFAULTS.weight_decay,
    warmup: Annotated[
        float, typer.Option(help="Warmup: a share of the steps (< 1) or a step count.")
    ] = DEFAULTS.warmup,
    scheduler: Annotated[
        str, typer.Option(help="transformers lr_scheduler_type.")
    ] = DEFAULTS.scheduler,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = DEFAULTS.epochs,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimiser steps (overrides --epochs).")
    ] = None,
    eval_steps: Annotated[
        int, typer.Option(help="Evaluate (and keep the best checkpoint) every N steps.")
    ] = DEFAULTS.eval_steps,
    save_steps: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (default: --eval-steps).")
    ] = None,
    keep_checkpoints: Annotated[
        int, typer.Option(help="Checkpoints kept (the best always).")
    ] = DEFAULTS.keep_checkpoints,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation and data order.")
    ] = DEFAULTS.seed,
    max_tokens: Annotated[
        int, typer.Option(help="Tokens per text (longer ones are cut).")
    ] = DEFAULTS.max_tokens,
    max_pixels: Annotated[int | None, typer.Option(help="Pixels per image (v4).")] = None,
    gradient_checkpointing: Annotated[
        bool,
        typer.Option(
            "--gradient-checkpointing",
            help="Recompute activations in the backward pass (less memory).",
        ),
    ] = False,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16", help="bf16 autocast (default: on CUDA).", show_default=False
        ),
    ] = None,
    device: Device = None,
    dtype: Dtype = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the newest checkpoint in --output.")
    ] = False,
    export_snapshot: Annotated[
        bool,
        typer.Option(
            "--export-snapshot",
            help="Also write OUTPUT/snapshot: the base with the task, official layout.",
        ),
    ] = False,
    progress: Progress = True,
) -> None:
    """Fine-tune a task adapter (backbone frozen) or add a task of your own; see
    docs/training.md."""
    from uniembed.training.run import train

    try:
        config = TrainConfig(
            model=model,
            data=data,
            output=output,
            task=task,
            eval_data=eval_data,
            eval_split=eval_split,
            data_split=data_split,
            init_from=init_from,
            overwrite=overwrite,
            symmetric=symmetric,
            loss=loss,
            temperature=temperature,
            bidirectional=bidirectional,
            joint_weights=joint_weights,
            matryoshka=matryoshka,
            negatives=negatives,
            batch_size=batch_size,
            mini_batch_size=mini_batch_size,
            gradient_accumulation=gradient_accumulation,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup=warmup,
            scheduler=scheduler,
            epochs=epochs,
            max_steps=max_steps,
            eval_steps=eval_steps,
            save_steps=save_steps,
            keep_checkpoints=keep_checkpoints,
            seed=seed,
            max_tokens=max_tokens,
            max_pixels=max_pixels,
            gradient_checkpointing=gradient_checkpointing,
            bf16=bf16,
            device=device,
            dtype=dtype,
            resume=resume,
            export_snapshot=export_snapshot,
            progress=progress,
        )
        result = train(config)
    except UniembedError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as error:  # a setting transformers refuses (e.g. an unknown scheduler)
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    _summary(result, model, task)


def _summary(result: TrainResult, model: str, task: str) -> None:
    if result.metrics:
        start, best = result.metrics["start"], result.metrics["best"]
        shown = ", ".join(f"{k} {start[k]:.4f} → {best[k]:.4f}" for k in best if k != "step")
        typer.echo(f"evaluation (start → best, step {best['step']}): {shown}", err=True)
        _warn_if_never_improved(result)
    typer.echo(f"adapter: {result.adapter}", err=True)
    if result.snapshot is not None:
        typer.echo(f"snapshot: {result.snapshot}", err=True)
    typer.echo(
        f"serve it: uniembed serve --model {model} --adapter {task}={result.adapter}", err=True
    )


def _warn_if_never_improved(result: TrainResult) -> None:
    """Say loudly when no evaluation after the start beat the start: the "best" evaluation reported
    is then step 0's, which no checkpoint holds, and the adapter written is no better."""
    start, best, end = (result.metrics[key] for key in ("start", "best", "end"))
    if best["step"] != start["step"] or end["step"] == start["step"]:
        return
    from uniembed.training.run import primary_name

    primary = primary_name(start)
    written = (
        f"the best later checkpoint's ({Path(result.best_checkpoint).name})"
        if result.best_checkpoint
        else "the last step's"
    )
    typer.secho(
        f"warning: the evaluation never improved on the start ({primary} {start[primary]:.4f} "
        f"at step {start['step']}, {end[primary]:.4f} at step {end['step']}): the best reported "
        f"is the starting point, which no checkpoint holds; the adapter written is {written}, "
        "no better than the start. Train longer, change --lr, or check the data.",
        fg="yellow",
        bold=True,
        err=True,
    )
