"""The user-facing facade: items in, vectors out, for any model family.

Work is split in three steps so that the server can share batches between requests:

* :meth:`Embedder.plan` — validate, tokenise, preprocess images (CPU) → a :class:`Plan`
  holding :class:`~uniembed.models.base.Row` rows;
* run the rows — :meth:`Embedder.run` in this process, or the server's shared batching queue;
* :meth:`Plan.assemble` — pool, truncate, normalise → an :class:`EncodeResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from uniembed import chunking
from uniembed.engine import BatchPolicy, run_sequences
from uniembed.errors import InputTooLarge, InvalidInput
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.models.base import EmbeddingModel, ModelInfo, Row, RowOutput, TaskSpec
from uniembed.pooling import finalize_vectors, normalize

TaskArg = str | Sequence[str] | None


@dataclass(frozen=True)
class EncodeOptions:
    """Per-call options shared by every item of a call (the API's request-level fields)."""

    dimensions: int | None = None
    multivector: bool = False
    late_chunking: bool = False
    truncate: bool = False
    normalized: bool = True
    max_tokens: int | None = None  # per item; None = the model's maximum
    max_pixels: int | None = None  # per image; None = the model's default
    window: int | None = None  # late chunking window in tokens; None = max_tokens
    overlap: int | None = None  # late chunking overlap; None = min(DEFAULT_OVERLAP, window // 2)


@dataclass
class EncodeResult:
    """One embedding per output item, and the tokens each item cost."""

    embeddings: list[torch.Tensor]  # (dim,) single vectors or (tokens, multivector_dim)
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    # Behave like the official v3 ``encode`` result (a list / array of vectors) where it is used so.
    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.embeddings[index]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.embeddings)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(result)``: a (items, dim) array of single vectors."""
        if any(e.dim() != 1 for e in self.embeddings):
            raise TypeError("multi-vector results have one matrix per item; use .embeddings")
        array = torch.stack(self.embeddings).numpy()
        return array.astype(dtype) if dtype is not None else array


@dataclass
class Plan:
    """Prepared rows of one call and how to turn their outputs into the call's result."""

    sequences: list[Row]
    assemble: Callable[[Sequence[RowOutput]], EncodeResult] = field(repr=False)


class Embedder:
    """Encode text and images with a loaded model; see :func:`uniembed.load`."""

    def __init__(self, model: EmbeddingModel, policy: BatchPolicy | None = None) -> None:
        self.model = model
        self.policy = policy or BatchPolicy()

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    # ----------------------------------------------------------------- validation
    def resolve_tasks(self, task: TaskArg, count: int, prompt_name: str | None = None) -> list[TaskSpec]:
        """One :class:`TaskSpec` per item from a single task name or a list of them."""
        if task is None or isinstance(task, str):
            spec = self.model.resolve_task(task, prompt_name)
            return [spec] * count
        names = list(task)
        if len(names) != count:
            raise InvalidInput(f"got {len(names)} task names for {count} inputs; give one task or one per input")
        cache: dict[str, TaskSpec] = {}
        return [cache.setdefault(n, self.model.resolve_task(n, prompt_name)) for n in names]

    def check_dimensions(self, dimensions: int | None, *, strict: bool = False) -> None:
        """Any size 1…dim is a valid prefix; ``strict`` allows only the trained Matryoshka sizes."""
        if dimensions is None:
            return
        info = self.info
        if strict and dimensions not in info.matryoshka_dims:
            raise InvalidInput(f"truncate_dim {dimensions} is not one of {list(info.matryoshka_dims)}")
        if not 1 <= dimensions <= info.dim:
            raise InvalidInput(f"dimensions must be between 1 and {info.dim}, got {dimensions}")

    def _check_options(self, options: EncodeOptions) -> None:
        self.check_dimensions(options.dimensions)
        if options.multivector and self.info.multivector_dim is None:
            raise InvalidInput(f"{self.info.name} has no multi-vector output")
        if options.multivector and options.late_chunking:
            raise InvalidInput("late_chunking and multi-vector output cannot be combined")
        max_tokens = options.max_tokens
        if max_tokens is not None and not 1 <= max_tokens <= self.info.max_tokens:
            raise InvalidInput(f"max_tokens must be between 1 and {self.info.max_tokens}, got {max_tokens}")

    # ----------------------------------------------------------------- planning
    def plan(self, items: Sequence[Item], task: TaskArg = None, options: EncodeOptions | None = None) -> Plan:
        """Validate and prepare ``items``; nothing runs on the model yet."""
        options = options or EncodeOptions()
        self._check_options(options)
        if not items:
            raise InvalidInput("no inputs given")
        tasks = self.resolve_tasks(task, len(items))
        if options.late_chunking:
            return self._plan_late_chunking(items, tasks, options)
        sequences = [self._sequence(i, item, spec, options) for i, (item, spec) in enumerate(zip(items, tasks))]

        def assemble(outputs: Sequence[RowOutput]) -> EncodeResult:
            embeddings = [self._finish(out, options) for out in outputs]
            return EncodeResult(embeddings, [s.num_tokens for s in sequences])

        return Plan(sequences, assemble)

    def _sequence(self, index: int, item: Item, spec: TaskSpec, options: EncodeOptions) -> Row:
        if isinstance(item, ImageItem):
            if "image" not in self.info.modalities:
                raise InvalidInput(f"input {index}: {self.info.name} embeds text only")
            sequence = self.model.image_sequence(item.image, spec, options.max_pixels)
        elif isinstance(item, TextItem):
            ids = self._text_ids(index, item.text, spec, options)
            sequence = self.model.text_sequence(ids, spec)
        else:
            raise InvalidInput(f"input {index}: unsupported item type {type(item).__name__}")
        sequence.multivector = options.multivector
        return sequence

    def _text_ids(self, index: int, text: str, spec: TaskSpec, options: EncodeOptions) -> list[int]:
        ids = self.model.tokenize(spec.prefix + text).ids
        limit = options.max_tokens or self.info.max_tokens
        if len(ids) > limit:
            if not options.truncate:
                raise InputTooLarge(
                    f"input {index} has {len(ids)} tokens, more than the limit of {limit}; "
                    "shorten it or set truncate=true"
                )
            ids = ids[:limit]
        return ids

    def _finish(self, output: RowOutput, options: EncodeOptions) -> torch.Tensor:
        if options.multivector:
            assert output.multivector is not None
            return output.multivector
        return finalize_vectors(output.pooled[0], options.dimensions, options.normalized)

    def _plan_late_chunking(self, items: Sequence[Item], tasks: list[TaskSpec], options: EncodeOptions) -> Plan:
        if any(not isinstance(item, TextItem) for item in items):
            raise InvalidInput("late_chunking needs text inputs only")
        if len({spec.name for spec in tasks}) != 1:
            raise InvalidInput("late_chunking encodes one document: use one task for all its chunks")
        text, spans = chunking.join_chunks([item.text for item in items])  # type: ignore[union-attr]
        document = self.plan_document(text, spans, tasks[0], options)

        def assemble(outputs: Sequence[RowOutput]) -> EncodeResult:
            raw = document.pool(outputs)
            vectors = finalize_vectors(raw, options.dimensions, options.normalized)
            return EncodeResult(list(vectors), document.tokens_per_chunk)

        return Plan(document.sequences, assemble)

    def plan_document(
        self, text: str, spans: Sequence[tuple[int, int]], spec: TaskSpec, options: EncodeOptions
    ) -> chunking.DocumentPlan:
        """Late-chunking plan of one document with chunk character ``spans``."""
        window = options.window or options.max_tokens or self.info.max_tokens
        if not 1 <= window <= self.info.max_tokens:
            raise InvalidInput(f"window must be between 1 and {self.info.max_tokens}, got {window}")
        return chunking.plan_document(
            self.model, text, spans, spec, window=window, overlap=options.overlap, truncate=options.truncate
        )

    # ----------------------------------------------------------------- running
    def run(self, plan: Plan, on_batch: Callable[[int], None] | None = None) -> EncodeResult:
        """Run a plan in this process with length-sorted, token-budgeted batches."""
        with torch.inference_mode():
            outputs = run_sequences(plan.sequences, self.model.forward, self.policy, on_batch)
        return plan.assemble(outputs)

    def encode(
        self,
        items: Sequence[Any] | Any,
        task: TaskArg = None,
        *,
        dimensions: int | None = None,
        multivector: bool = False,
        late_chunking: bool = False,
        truncate: bool = False,
        normalized: bool = True,
        max_tokens: int | None = None,
        max_pixels: int | None = None,
        truncate_dim: int | None = None,
    ) -> EncodeResult:
        """Embed mixed text and image items (the path the server uses).

        Also the official v3 call ``encode(texts, task=..., truncate_dim=...)``: ``truncate_dim`` is
        ``dimensions`` restricted to the trained Matryoshka sizes, and the result indexes, iterates and
        converts (``np.asarray``) like the official list/array of vectors.

        ``items``: strings, PIL images, or dicts ``{"text"}``, ``{"image"}`` (path, URL, bytes, base64,
        data URI) and ``{"pdf"}`` (one embedding per page, in order). ``task``: one API task name
        (``"retrieval.query"``, ``"code.passage"``, …) or one per item.
        """
        from uniembed.inputs.parse import coerce_items_with_origin  # local: keeps import light

        if truncate_dim is not None:
            if dimensions is not None:
                raise InvalidInput("give dimensions or truncate_dim, not both")
            self.check_dimensions(truncate_dim, strict=True)
            dimensions = truncate_dim
        raw = items if isinstance(items, (list, tuple)) else [items]
        parsed, origin = coerce_items_with_origin(raw)
        if task is not None and not isinstance(task, str):
            names = list(task)
            if len(names) != len(raw):
                raise InvalidInput(f"got {len(names)} task names for {len(raw)} inputs")
            task = [names[i] for i in origin]  # a PDF's pages share its task
        options = EncodeOptions(
            dimensions=dimensions,
            multivector=multivector,
            late_chunking=late_chunking,
            truncate=truncate,
            normalized=normalized,
            max_tokens=max_tokens,
            max_pixels=max_pixels,
        )
        return self.run(self.plan(parsed, task, options))

    def embed_document(
        self,
        text: str,
        spans: Sequence[tuple[int, int]] | None = None,
        *,
        chunker: chunking.Chunker | None = None,
        task: str | None = None,
        dimensions: int | None = None,
        window: int | None = None,
        overlap: int | None = None,
        truncate: bool = False,
    ) -> torch.Tensor:
        """Late chunking of one long document: one normalised vector per chunk → (chunks, dim).

        Chunks are given as character ``spans`` or made by a ``chunker`` (see :mod:`uniembed.chunking`);
        documents longer than ``window`` tokens are encoded in overlapping windows.
        """
        if (spans is None) == (chunker is None):
            raise InvalidInput("give exactly one of spans or chunker")
        self.check_dimensions(dimensions)
        spec = self.resolve_tasks(task, 1)[0]
        if chunker is not None:
            spans = chunker(text, self.model)
        options = EncodeOptions(dimensions=dimensions, window=window, overlap=overlap, truncate=truncate)
        document = self.plan_document(text, spans, spec, options)  # type: ignore[arg-type]
        plan = Plan(document.sequences, lambda outs: EncodeResult([document.pool(outs)], [0]))
        raw = self.run(plan).embeddings[0]
        return finalize_vectors(raw, dimensions)

    # ----------------------------------------------------------------- official-compatible API
    def encode_text(
        self,
        texts: str | Sequence[str],
        task: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        return_multivector: bool = False,
        return_numpy: bool = False,
        truncate_dim: int | None = None,
        prompt_name: str | None = None,
    ) -> Any:
        """Drop-in for the official ``encode_text`` (same names and defaults; ``batch_size`` is a
        row cap for the token-budget batcher)."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        self.check_dimensions(truncate_dim, strict=True)
        specs = self.resolve_tasks(task, len(batch), prompt_name)
        options = EncodeOptions(
            dimensions=truncate_dim, multivector=return_multivector, truncate=True, max_tokens=max_length
        )
        result = self._run_official(self.plan([TextItem(t) for t in batch], [s.name for s in specs], options), batch_size)
        return _official_output(result.embeddings, single, return_multivector, return_numpy)

    def encode_image(
        self,
        images: Any,
        task: str | None = None,
        batch_size: int | None = None,
        return_multivector: bool = False,
        return_numpy: bool = False,
        truncate_dim: int | None = None,
        max_pixels: int | None = None,
    ) -> Any:
        """Drop-in for the official ``encode_image``: PIL images, paths, URLs, bytes, base64, data URIs."""
        from uniembed.inputs.parse import coerce_image_items

        single = not isinstance(images, (list, tuple))
        items = coerce_image_items([images] if single else list(images))
        self.check_dimensions(truncate_dim, strict=True)
        options = EncodeOptions(dimensions=truncate_dim, multivector=return_multivector, max_pixels=max_pixels)
        result = self._run_official(self.plan(items, task, options), batch_size)
        return _official_output(result.embeddings, single, return_multivector, return_numpy)

    def _run_official(self, plan: Plan, batch_size: int | None) -> EncodeResult:
        if batch_size is None:
            return self.run(plan)
        capped = Embedder(self.model, BatchPolicy(self.policy.token_budget, batch_size))
        return capped.run(plan)


def _official_output(embeddings: list[torch.Tensor], single: bool, multivector: bool, as_numpy: bool) -> Any:
    """Shape results like the official code: one tensor for one input, else a list (or an array)."""
    if single:
        return embeddings[0].numpy() if as_numpy else embeddings[0]
    if as_numpy and not multivector:
        return np.stack([e.numpy() for e in embeddings])
    return [e.numpy() for e in embeddings] if as_numpy else embeddings


__all__ = ["Embedder", "EncodeOptions", "EncodeResult", "Plan", "normalize"]
