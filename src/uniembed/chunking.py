"""Late chunking (contract stub; the implementation is being written)."""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass

import torch

from uniembed.models.base import EmbeddingModel, Sequence, SequenceOutput, Span, TaskSpec

DEFAULT_OVERLAP = 512
Chunker = Callable[[str, EmbeddingModel], list[Span]]


def join_chunks(chunks: Seq[str]) -> tuple[str, list[Span]]:
    """Join API late-chunking items into one document; return it and each item's character span."""
    raise NotImplementedError


@dataclass
class DocumentPlan:
    sequences: list[Sequence]
    tokens_per_chunk: list[int]

    def pool(self, outputs: Seq[SequenceOutput]) -> torch.Tensor:
        raise NotImplementedError


def plan_document(
    model: EmbeddingModel, text: str, spans: Seq[Span], task: TaskSpec, *, window: int, overlap: int, truncate: bool
) -> DocumentPlan:
    raise NotImplementedError
