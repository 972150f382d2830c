"""The contract between model families and the rest of uniembed.

A model turns *items* into :class:`Row` objects (``text_sequence`` / ``image_sequence``, CPU work:
tokenising, image preprocessing) and runs batches of them (``forward``, the accelerator work).
Everything else — batching, pooling into vectors, Matryoshka, encodings, late chunking, the server —
works on these types alone and never looks inside a model family.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image
from torch import nn

from uniembed.core.vectors import Span
from uniembed.errors import InvalidInput


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model offers; used for validation and by ``GET /v1/models``."""

    name: str
    family: str  # "jina-embeddings-v4" | "jina-embeddings-v3"
    dim: int  # full single-vector size
    matryoshka_dims: tuple[int, ...]
    max_tokens: int
    tasks: tuple[str, ...]  # API task names, e.g. "retrieval.query"
    default_task: str | None
    multivector_dim: int | None = None  # None: no multi-vector output
    modalities: frozenset[str] = frozenset({"text"})
    # How the family's official code batches one encode call (the baseline of ``uniembed bench``)
    official_batch_size: int = 8
    official_sorts_by_length: bool = False  # longest text first
    # MTEB task types and prompt keys (``STS``, ``Retrieval-query``, ``query``, …) → API task, as
    # MTEB's own entry for the family routes them; the task of programming content, if any
    task_types: Mapping[str, str] = field(default_factory=dict)
    code_task: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A resolved task: which adapter every layer uses for the row and the text prefix."""

    name: str  # canonical API name, e.g. "retrieval.query"
    adapter: int  # index into the resident adapters; -1 = base weights, no adapter
    prefix: str  # prepended to text inputs (already formatted, e.g. "Query: ")


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of a text with each token's character span (special tokens get (0, 0))."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]


@dataclass
class ImageFeatures:
    """Preprocessed pixels of one image, in the backbone's patch layout."""

    pixel_values: torch.Tensor  # (patches, channels * temporal_patch * patch * patch)
    grid_thw: tuple[int, int, int]


@dataclass(frozen=True)
class PatchGrid:
    """Where an image's patches sit among its tokens: rows ``[start, start + height * width)`` of
    the multi-vector, row-major over a ``height`` × ``width`` grid of cells covering the resized
    image."""

    start: int
    height: int
    width: int

    @property
    def stop(self) -> int:
        """One past the last patch token."""
        return self.start + self.height * self.width


@dataclass
class Row:
    """One row of model work: a token sequence, its adapter and what to return for it."""

    input_ids: torch.Tensor  # (seq,) int64, CPU
    adapter: int  # resident adapter index for this row; -1 = none
    spans: tuple[Span, ...]  # token spans, each mean-pooled into one vector
    multivector: bool = False  # also return projected, normalised per-token vectors
    image: ImageFeatures | None = None
    patches: PatchGrid | None = None  # images: where the patch tokens are

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class RowOutput:
    """What ``forward`` returns for one :class:`Row` (float32, on the CPU)."""

    pooled: torch.Tensor  # (len(spans), dim): raw span means, not yet normalised
    multivector: torch.Tensor | None = None  # (num_tokens, multivector_dim), L2-normalised rows


@dataclass
class GradOutput:
    """What ``forward_with_grad`` returns for a batch: on the model's device, float32,
    differentiable."""

    pooled: torch.Tensor  # (spans of all rows, dim): raw span means, rows in order
    multivectors: (
        torch.Tensor | None
    )  # (rows, tokens, multivector_dim): L2-normalised, zero at padding
    mask: torch.Tensor  # (rows, tokens) bool: True at real tokens


QUERY, PASSAGE = "query", "passage"  # the two sides of a retrieval-like task


def task_api_names(task: str, symmetric: bool) -> dict[str, str]:
    """The API task name each side of ``task`` is called by: ``task.query`` / ``task.passage``, or
    ``task`` alone for a symmetric task (both sides embedded alike, as text-matching is).

    >>> task_api_names("my-domain", symmetric=False)
    {'query': 'my-domain.query', 'passage': 'my-domain.passage'}
    >>> task_api_names("my-domain", symmetric=True)
    {'query': 'my-domain', 'passage': 'my-domain'}
    """
    if symmetric:
        return {QUERY: task, PASSAGE: task}
    return {QUERY: f"{task}.{QUERY}", PASSAGE: f"{task}.{PASSAGE}"}


_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}")  # + ".passage" fits the API's 64


def check_task_name(name: str) -> None:
    """Task names are 1-50 letters, digits, ``-`` or ``_`` (no dots: a dot separates the side).

    >>> check_task_name("my-domain")
    >>> check_task_name("my.domain")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: invalid task name 'my.domain': use 1-50 letters, digits, '-' or
    '_', starting with a letter or digit
    """
    if not isinstance(name, str) or not _TASK_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid task name {name!r}: use 1-50 letters, digits, '-' or '_', starting with a "
            "letter or digit"
        )


@runtime_checkable
class Processor(Protocol):
    """The CPU side of a model: tasks, tokenisation and image preprocessing into :class:`Row`
    objects. Chunkers get this, never the model."""

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        """Map an API task name (or official task + prompt_name) to a :class:`TaskSpec`.

        Raises :class:`uniembed.errors.InvalidInput` listing the valid names.
        """
        ...

    def tokenize(self, text: str) -> TokenizedText:
        """Tokenise a full text exactly as the model sees it (special tokens included)."""
        ...

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        """Wrap already-tokenised text into a :class:`Row` (default span: all tokens)."""
        ...

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        """Preprocess one image into a :class:`Row` pooled over its vision span."""
        ...


class ProcessorMethods:
    """The :class:`Processor` half of a model, answered by its ``processor``: families inherit it
    instead of writing the delegation each."""

    processor: Processor

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        return self.processor.resolve_task(task, prompt_name)

    def tokenize(self, text: str) -> TokenizedText:
        return self.processor.tokenize(text)

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        return self.processor.text_sequence(ids, task, spans)

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        return self.processor.image_sequence(image, task, max_pixels)


@runtime_checkable
class EmbeddingModel(Processor, Protocol):
    """What every model family implements: its :class:`Processor` methods (delegated to
    ``processor``: :class:`ProcessorMethods`) and the forward."""

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    processor: Processor  # the CPU side alone

    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        """Run one padded batch; a row's output never depends on the other rows."""
        ...


@runtime_checkable
class PackableModel(Protocol):
    """A model that can also run a batch padding-free (:mod:`uniembed.models.packing`)."""

    def forward_packed(self, batch: Sequence[Row]) -> list[RowOutput]:
        """:meth:`EmbeddingModel.forward` with the rows packed into one sequence, each attending
        only to itself: the same outputs within float rounding, without computing padding."""
        ...


@runtime_checkable
class AdaptableModel(EmbeddingModel, Protocol):
    """What adding tasks (served beside the official ones) and training them needs.

    A *task* is what users name (``retrieval``, ``my-domain``); it runs one resident adapter (v4) or
    one per side (v3 ``retrieval.query`` / ``retrieval.passage``). Added tasks leave the official
    adapters untouched.
    """

    def add_task(
        self,
        name: str,
        *,
        symmetric: bool = False,
        init_from: str | None = None,
        factors: Mapping[str, torch.Tensor] | None = None,
        prompts: Mapping[str, str] | None = None,
        replace: bool = False,
        factor_dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        """Make ``name`` servable under :func:`task_api_names`. Its factors come from ``factors``
        (the layout of :meth:`task_factors`), else a copy of task ``init_from``'s, else a fresh
        PEFT-style initialisation drawn with ``seed`` (the task then equals the base weights).
        ``replace`` lets ``name`` shadow an existing task; ``factor_dtype`` (default: the model's)
        is float32 for training."""
        ...

    def task_factors(self, name: str) -> dict[str, torch.Tensor]:
        """The task's LoRA factors keyed as in the family's official adapter files (CPU copies)."""
        ...

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        """The task's factors as the Parameters the model runs (each once, tied ones included
        once)."""
        ...

    def write_adapter_files(self, task: str, directory: Path, *, base_model: str) -> None:
        """Write the task's factors into an adapter folder (``adapter_model.safetensors``, keyed
        as :meth:`task_factors`) with any file the family's own tools read beside them."""
        ...

    def lora_settings(self) -> dict:
        """Rank, alpha and target modules of the resident adapters (``r``, ``lora_alpha``,
        ``target_modules``)."""
        ...

    def forward_with_grad(self, batch: Sequence[Row]) -> GradOutput:
        """:meth:`forward` with autograd on: outputs stay on the device, padded as one batch."""
        ...

    def set_training(self, enabled: bool, *, gradient_checkpointing: bool = False) -> None:
        """Training mode (no dropout in either family) with optional activation checkpointing."""
        ...


def default_spans(num_tokens: int, spans: Sequence[Span] | None) -> tuple[Span, ...]:
    """``spans`` as a tuple, or one span covering every token."""
    return tuple(spans) if spans is not None else ((0, num_tokens),)


def pad_ids(rows: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors → ids (batch, seq) and attention mask (batch, seq).

    >>> ids, mask = pad_ids([torch.tensor([5, 6]), torch.tensor([7])], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [7, 0]], [[1, 1], [1, 0]])
    """
    longest = max(int(r.shape[0]) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = 1
    return ids, mask
