"""One training run, start to end: check everything, train, save the adapter (and a snapshot).

Everything that can be wrong with the inputs (data files, evaluation data, the task name, images
for a text-only model, an earlier run in the output folder) is found before the first step.

The run folder::

    OUTPUT/
      training_config.json  the settings (a resumed run must match them)
      checkpoints/          the Trainer's checkpoints (factors, optimiser, scheduler, RNG, position)
      adapter/              the trained task (best checkpoint with an evaluation split, else
                            the last)
      snapshot/             with export_snapshot: the base snapshot with the task, official layout
      training.json         settings, metrics at the start / best / end, steps, seconds
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniembed.errors import InvalidInput
from uniembed.models.base import PASSAGE, QUERY, AdaptableModel, ModelInfo, task_api_names
from uniembed.training.config import FRESH, RESUME_KEYS, TrainConfig
from uniembed.training.data import EvalData, TrainingData, read_eval_data, read_training_data
from uniembed.training.losses import CoSENTLoss, InfoNCELoss, JointLoss, MatryoshkaLoss

CONFIG_FILE = "training_config.json"
RESULT_FILE = "training.json"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainResult:
    """Where the results are and how the run went."""

    adapter: Path
    snapshot: Path | None
    embedder: Any  # the in-memory model with the trained task, ready to encode with it
    steps: int
    metrics: dict[str, Any]  # "start", "best", "end" evaluation metrics (empty without eval data)
    best_checkpoint: str | None


@dataclass(frozen=True)
class RunPlan:
    """What a run trains, resolved from the settings and the model."""

    task: str
    symmetric: bool
    init_from: str | None  # None: fresh
    loss: str
    temperature: float

    @property
    def tasks(self) -> dict[str, str]:
        return task_api_names(self.task, self.symmetric)


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Run ``config``; ``callbacks`` are extra transformers ``TrainerCallback`` s."""
    started = time.monotonic()
    data = read_training_data(config.data, split=config.data_split, negatives=config.negatives)
    eval_data = (
        read_eval_data(config.eval_data, config.eval_split)
        if config.eval_data is not None
        else None
    )
    _check_output(config)
    model = _load_model(config)
    plan = plan_run(config, model, data)
    _check_items(model.info, data, eval_data)
    _record_settings(config)
    model.add_task(
        plan.task,
        symmetric=plan.symmetric,
        init_from=plan.init_from,
        replace=config.overwrite,
        factor_dtype=torch.float32,
        seed=config.seed,
    )
    from uniembed.embedder import Embedder

    embedder = Embedder(model)  # the inference path: evaluation, batches, and the result
    trainer = _trainer(config, embedder, model, plan, data, eval_data, callbacks)
    trainer.train(resume_from_checkpoint=True if config.resume else None)
    return _finish(config, embedder, model, plan, trainer, time.monotonic() - started)


# --------------------------------------------------------------------------- checks and plan
def _check_output(config: TrainConfig) -> None:
    """A new run needs a folder without checkpoints; a resumed one checkpoints made with its
    settings."""
    checkpoints = config.output / CHECKPOINTS
    existing = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
    record = json.loads(json.dumps(config.as_record()))
    saved_file = config.output / CONFIG_FILE
    if config.resume:
        if not existing:
            raise InvalidInput(f"nothing to resume: no checkpoints in {checkpoints}")
        saved = json.loads(saved_file.read_text(encoding="utf-8")) if saved_file.is_file() else {}
        changed = [key for key in RESUME_KEYS if saved.get(key) != record.get(key)]
        if changed:
            raise InvalidInput(
                f"{config.output} was trained with other settings ({', '.join(changed)}); resume "
                "with the same ones, or train into a new output folder"
            )
        return
    if existing:
        raise InvalidInput(
            f"{config.output} holds checkpoints of an earlier run: resume it (--resume) or choose "
            "a new --output"
        )


def _record_settings(config: TrainConfig) -> None:
    if config.resume:
        return
    config.output.mkdir(parents=True, exist_ok=True)
    record = json.dumps(config.as_record(), indent=2) + "\n"
    (config.output / CONFIG_FILE).write_text(record, encoding="utf-8")


def _load_model(config: TrainConfig) -> AdaptableModel:
    from uniembed.models.loading import resolve_device
    from uniembed.models.quantized import is_int8
    from uniembed.models.registry import load_model

    if is_int8(config.dtype):
        raise InvalidInput(
            "training needs float base weights (float32 or bfloat16): int8 linears have no "
            "backward pass; embed with the trained adapter under --dtype int8 afterwards"
        )
    device = resolve_device(config.device)
    dtype = config.dtype or (
        torch.bfloat16 if _bf16(config, device) else torch.float32
    )  # frozen base; factors stay fp32
    return load_model(config.model, device=device, dtype=dtype)  # type: ignore[return-value]


def _bf16(config: TrainConfig, device: torch.device) -> bool:
    return config.bf16 if config.bf16 is not None else device.type == "cuda"


def _exists(model: AdaptableModel, name: str) -> bool:
    try:
        model.resolve_task(name)
    except InvalidInput:
        return False
    return True


def _is_task(model: AdaptableModel, task: str) -> bool:
    return any(_exists(model, name) for name in (task, f"{task}.{QUERY}", f"{task}.{PASSAGE}"))


def _is_symmetric(model: AdaptableModel, task: str) -> bool:
    return not _exists(model, f"{task}.{QUERY}")


def plan_run(config: TrainConfig, model: AdaptableModel, data: TrainingData) -> RunPlan:
    """Resolve the task, its symmetry, where its factors start, the loss and the temperature."""
    continuing = _is_task(model, config.task)
    if continuing and not config.overwrite:
        raise InvalidInput(
            f"task {config.task!r} exists in {model.info.name}; pass --overwrite to continue "
            "training it (its official adapter stays untouched in memory; the exported one "
            "replaces it), or choose a new name"
        )
    init_from = config.init_from
    if init_from is None:
        init_from = config.task if continuing else None
    elif init_from == FRESH:
        init_from = None
    elif not _is_task(model, init_from):
        raise InvalidInput(f"--init-from {init_from!r} is not a task of {model.info.name}")
    symmetric = config.symmetric
    if symmetric is None:
        if continuing:
            symmetric = _is_symmetric(model, config.task)
        elif data.kind == "graded":
            symmetric = True
        else:
            symmetric = _is_symmetric(model, init_from) if init_from else False
    loss = _loss_name(config, data, model.info)
    return RunPlan(config.task, symmetric, init_from, loss, config.temperature_for(init_from))


def _loss_name(config: TrainConfig, data: TrainingData, info: ModelInfo) -> str:
    loss = config.loss
    if loss == "auto":
        loss = (
            "cosent" if data.kind == "graded" else ("joint" if info.multivector_dim else "infonce")
        )
    if (loss == "cosent") != (data.kind == "graded"):
        need = (
            "graded pairs (sentence1, sentence2, score)"
            if loss == "cosent"
            else "pairs (query, positive)"
        )
        raise InvalidInput(f"loss {loss!r} needs {need}; {data.source} holds {data.kind}")
    if loss == "joint" and info.multivector_dim is None:
        raise InvalidInput(
            f"the joint loss needs multi-vectors; {info.name} has none (use infonce)"
        )
    return loss


def _check_items(info: ModelInfo, data: TrainingData, eval_data: EvalData | None) -> None:
    if "image" in info.modalities:
        return
    where = data.first_image()
    if where is not None:
        raise InvalidInput(f"{where}: an image item, but {info.name} embeds text only")
    if eval_data is not None and any(not isinstance(i, str) for i in _eval_items(eval_data)):
        raise InvalidInput(f"{eval_data.source}: image items, but {info.name} embeds text only")


def _eval_items(data: EvalData) -> list[Any]:
    if hasattr(data, "corpus"):
        return [*data.queries.values(), *data.corpus.values()]  # type: ignore[union-attr]
    return [*data.firsts, *data.seconds]  # type: ignore[union-attr]


def build_objective(config: TrainConfig, plan: RunPlan, info: ModelInfo) -> nn.Module:
    """The loss module of a run (Matryoshka-weighted over the model's trained sizes unless off)."""

    def matryoshka(inner: nn.Module) -> nn.Module:
        return MatryoshkaLoss(inner, info.matryoshka_dims) if config.matryoshka else inner

    if plan.loss == "cosent":
        return matryoshka(CoSENTLoss(plan.temperature))
    dense = matryoshka(InfoNCELoss(plan.temperature, config.bidirectional))
    if plan.loss == "joint":
        return JointLoss(dense, plan.temperature, config.joint_weights)
    return dense


# --------------------------------------------------------------------------- the Trainer
def _trainer(
    config: TrainConfig,
    embedder: Any,
    model: AdaptableModel,
    plan: RunPlan,
    data: TrainingData,
    eval_data: EvalData | None,
    callbacks: Sequence[Any],
) -> Any:
    from uniembed._optional import require

    require("accelerate", "train", "the transformers Trainer")
    from transformers import TrainingArguments

    from uniembed.plans import EncodeOptions
    from uniembed.training.evaluate import evaluate, primary_metric
    from uniembed.training.trainer import AdapterTrainer, Collator, TaskModule

    output = "both" if plan.loss == "joint" else "single"
    options = EncodeOptions(
        output=output, truncate=True, max_tokens=config.max_tokens, max_pixels=config.max_pixels
    )
    with_eval = eval_data is not None
    save_steps = config.save_steps or (config.eval_steps if with_eval else 500)
    args = TrainingArguments(
        output_dir=str(config.output / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup,
        lr_scheduler_type=config.scheduler,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if with_eval else "no",
        eval_steps=config.eval_steps if with_eval else None,
        eval_on_start=with_eval and not config.resume,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=config.keep_checkpoints,
        load_best_model_at_end=with_eval,
        metric_for_best_model=primary_metric(eval_data) if eval_data is not None else None,
        greater_is_better=True,
        seed=config.seed,
        data_seed=config.seed,
        bf16=_bf16(config, model.device),
        use_cpu=model.device.type == "cpu",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
    )

    def evaluator() -> dict[str, float]:
        return evaluate(embedder, eval_data, plan.tasks, config.max_tokens)  # type: ignore[arg-type]

    return AdapterTrainer(
        model=TaskModule(model, plan.task, config.gradient_checkpointing),
        args=args,
        train_dataset=data,
        eval_dataset=eval_data,
        data_collator=Collator(embedder, plan.tasks, options),
        objective=build_objective(config, plan, model.info),
        mini_batch_size=config.mini_batch_size,
        evaluator=evaluator if with_eval else None,
        callbacks=list(callbacks),
    )


# --------------------------------------------------------------------------- results
def _finish(
    config: TrainConfig,
    embedder: Any,
    model: AdaptableModel,
    plan: RunPlan,
    trainer: Any,
    seconds: float,
) -> TrainResult:
    from uniembed.training.export import export_snapshot, save_adapter

    model.set_training(False)
    metrics = _metrics(trainer.state.log_history)
    record = {
        "config": config.as_record(),
        "plan": {
            "task": plan.task,
            "symmetric": plan.symmetric,
            "init_from": plan.init_from,
            "loss": plan.loss,
            "temperature": plan.temperature,
            "api_task_names": sorted(set(plan.tasks.values())),
        },
        "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metrics": metrics,
        "seconds": round(seconds, 1),
    }
    adapter = save_adapter(
        model,
        plan.task,
        config.output / "adapter",
        base_model=config.model,
        symmetric=plan.symmetric,
        training={k: record[k] for k in ("plan", "steps", "metrics")},
    )
    snapshot = None
    if config.export_snapshot:
        snapshot = config.output / "snapshot"
        if snapshot.exists():
            raise InvalidInput(f"{snapshot} exists; remove it to export again")
        export_snapshot(config.model, adapter, snapshot, replace_task=config.overwrite)
    (config.output / RESULT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TrainResult(
        adapter,
        snapshot,
        embedder,
        trainer.state.global_step,
        metrics,
        trainer.state.best_model_checkpoint,
    )


def _metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The first, best and last evaluation of the run (by the primary metric) from the Trainer's
    log."""
    evaluations = [
        {k[5:]: v for k, v in entry.items() if k.startswith("eval_")} | {"step": entry.get("step")}
        for entry in history
        if any(k.startswith("eval_") for k in entry)
    ]
    if not evaluations:
        return {}
    primary = primary_name(evaluations[0])
    return {
        "start": evaluations[0],
        "best": max(evaluations, key=lambda e: e[primary]),
        "end": evaluations[-1],
    }


def primary_name(evaluation: dict[str, Any]) -> str:
    """The metric that picks the best evaluation: Spearman for graded pairs, else nDCG@10."""
    return "spearman" if "spearman" in evaluation else "ndcg@10"
