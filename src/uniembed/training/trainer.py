"""The training loop: transformers' ``Trainer`` with our loss, our batches and our evaluation.

What the Trainer brings unchanged: the optimiser (AdamW) and learning-rate schedule with warmup,
gradient accumulation, bf16 autocast through accelerate, gradient clipping, seeding, the progress
bar and logs, periodic evaluation, checkpoints (model, optimiser, scheduler, RNG states, data
position) with ``save_total_limit`` and best-checkpoint tracking, and resuming. What is ours:

* :class:`TaskModule` — what the Trainer sees as "the model": an ``nn.Module`` whose only
  parameters are the trained task's LoRA factors (so the optimiser and every checkpoint hold just
  those), with a forward that embeds prepared rows through the resident multi-adapter model;
* :class:`Collator` — examples → tokenised / preprocessed rows, in the data loader;
* :class:`AdapterTrainer` — ``compute_loss`` (the contrastive or CoSENT loss of a batch),
  ``training_step`` (cached mini-batches, when asked) and ``evaluate`` (nDCG@10 / Spearman).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from uniembed.inputs.parse import coerce_items
from uniembed.models.base import PASSAGE, QUERY, AdaptableModel, GradOutput, Row
from uniembed.plans import EncodeOptions
from uniembed.training.cached import cached_backward
from uniembed.training.data import Example, PairExample


class TaskModule(nn.Module):
    """One task's factors as the module's parameters, and a differentiable forward over rows."""

    def __init__(
        self, model: AdaptableModel, task: str, gradient_checkpointing: bool = False
    ) -> None:
        super().__init__()
        self.factors = nn.ParameterList(model.task_parameters(task))  # the same Parameter objects
        for parameter in self.factors:
            parameter.requires_grad_(True)
        self.embedding_model = model
        self.gradient_checkpointing = gradient_checkpointing
        self._model_training: bool | None = None

    def forward(self, rows: Sequence[Row]) -> GradOutput:
        return self.embedding_model.forward_with_grad(rows)

    def train(self, mode: bool = True) -> TaskModule:
        super().train(mode)
        if (
            mode != self._model_training
        ):  # switching checkpointing walks every layer: only on change
            self.embedding_model.set_training(
                mode, gradient_checkpointing=self.gradient_checkpointing
            )
            self._model_training = mode
        return self


@dataclass
class TrainingBatch:
    """Rows of the two sides of a batch: queries and their document groups (positive first, then
    the hard negatives), or the first and second texts of graded pairs with their scores."""

    queries: list[Row]
    documents: list[Row]
    labels: torch.Tensor | None = None


class Collator:
    """Examples → a :class:`TrainingBatch` (tokenising, truncating to ``max_tokens``, decoding and
    preprocessing images), through the same planning as inference."""

    def __init__(self, embedder: Any, tasks: Mapping[str, str], options: EncodeOptions) -> None:
        self.embedder = embedder
        self.tasks = dict(tasks)
        self.options = options

    def __call__(self, examples: Sequence[Example]) -> dict[str, TrainingBatch]:
        if isinstance(examples[0], PairExample):
            pairs = [e for e in examples if isinstance(e, PairExample)]
            queries = [e.query for e in pairs]
            documents = [item for e in pairs for item in (e.positive, *e.negatives)]
            labels = None
        else:
            queries = [e.first for e in examples]  # type: ignore[union-attr]
            documents = [e.second for e in examples]  # type: ignore[union-attr]
            labels = torch.tensor([e.score for e in examples], dtype=torch.float32)  # type: ignore[union-attr]
        return {
            "batch": TrainingBatch(
                self._rows(queries, QUERY), self._rows(documents, PASSAGE), labels
            )
        }

    def _rows(self, items: list[Any], side: str) -> list[Row]:
        return list(self.embedder.plan(coerce_items(items), self.tasks[side], self.options).rows)


class AdapterTrainer(Trainer):
    """``Trainer`` with a contrastive / CoSENT ``objective``, optional cached mini-batches of
    ``mini_batch_size`` rows and an ``evaluator`` returning metrics (unprefixed) of the current
    adapter."""

    def __init__(
        self,
        *args: Any,
        objective: nn.Module,
        mini_batch_size: int | None = None,
        evaluator: Callable[[], dict[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.objective = objective
        self.mini_batch_size = mini_batch_size
        self.evaluator = evaluator
        super().__init__(*args, **kwargs)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        batch: TrainingBatch = inputs["batch"]
        query, documents = model(batch.queries), model(batch.documents)
        loss = self.objective(query, documents, self._labels(batch))
        return (loss, (query, documents)) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if self.mini_batch_size is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        batch: TrainingBatch = inputs["batch"]
        labels = self._labels(batch)
        scale = 1.0 / self.current_gradient_accumulation_steps  # as the Trainer scales a plain loss
        with self.compute_loss_context_manager():
            loss = cached_backward(
                model,
                [batch.queries, batch.documents],
                lambda sides: self.objective(*sides, labels),
                self.mini_batch_size,
                scale,
                self.accelerator.backward,
            )
        return loss * scale

    def _labels(self, batch: TrainingBatch) -> torch.Tensor | None:
        return batch.labels.to(self.args.device) if batch.labels is not None else None

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        self.model.eval()
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in self.evaluator().items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics
