"""The user-facing facade: items in, vectors out, for any model family.

Work is split in three steps so that every caller can share batches:

* :meth:`Embedder.plan` — validate, tokenise, preprocess images (CPU) → a
  :class:`~uniembed.plans.Plan` holding :class:`~uniembed.models.base.Row` s (plain data: it can
  cross a process boundary);
* run the rows — on the embedder's :class:`~uniembed.engine.loop.Engine`, the one batching loop that
  the library, the server, bulk jobs and benchmarks all go through (:meth:`Embedder.run`, or
  ``embedder.engine.submit`` for asynchronous callers);
* :meth:`~uniembed.plans.Plan.assemble` — pool, truncate, normalise → an
  :class:`~uniembed.plans.EncodeResult`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from uniembed import chunking
from uniembed.core.checks import check_int
from uniembed.engine.loop import Engine
from uniembed.engine.planning import BatchPolicy
from uniembed.errors import InputTooLarge, InvalidInput, UniembedError, ValidationFailed, labelled
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.models.base import (
    EmbeddingModel,
    ModelInfo,
    PackableModel,
    Row,
    RowOutput,
    TaskSpec,
    TokenizedText,
)
from uniembed.plans import EncodeOptions, EncodeResult, Output, Plan, check_dimensions

TaskArg = str | Sequence[str] | Sequence[TaskSpec] | None
PART_ITEMS = 32  # inputs encode prepares at a time while the part before is in forward


class Embedder:
    """Encode text and images with a loaded model; see :func:`uniembed.load`."""

    def __init__(
        self, model: EmbeddingModel, policy: BatchPolicy | None = None, *, source: str | None = None
    ) -> None:
        self._model = model
        self.source = source  # what the model was loaded from (path or hub id), when known
        packed = model.forward_packed if isinstance(model, PackableModel) else None
        self.engine = Engine(model.forward, policy, name=model.info.name, forward_packed=packed)

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def device(self) -> torch.device:
        return self._model.device

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in vars(self._model).values() if isinstance(m, torch.nn.Module)]

    def flops_per_token(self) -> int:
        """About 2 × the weights of every Linear layer: the matrix work one token costs (attention
        and the vision tower's extra work aside). For MFU estimates."""
        weights = sum(
            layer.weight.numel()
            for root in self._modules()
            for layer in root.modules()
            if isinstance(layer, torch.nn.Linear)
        )
        return 2 * weights

    def weights_digest(self, samples_per_tensor: int = 1024) -> str:
        """A digest of the loaded weights (adapters included): every tensor's name, shape, dtype and
        ``samples_per_tensor`` evenly spaced values. Tells two loaded models apart without running
        either (caches of encodings key on it); milliseconds even for the full-size model."""
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.info.name}|{self.info.family}".encode())
        for name, tensor in self._tensors():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).numpy()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(sample.tobytes())
        return digest.hexdigest()

    def _tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Every weight the model holds: its modules' state and tensors kept as plain attributes."""
        found = []
        for attribute, value in vars(self._model).items():
            if isinstance(value, torch.nn.Module):
                found += [(f"{attribute}.{name}", t) for name, t in value.state_dict().items()]
            elif isinstance(value, torch.Tensor):
                found.append((attribute, value))
        return found

    # ----------------------------------------------------------------- validation
    def resolve_tasks(
        self, task: TaskArg, count: int, prompt_name: str | None = None
    ) -> list[TaskSpec]:
        """One :class:`TaskSpec` per item from a single task name or a list of them (or of specs
        resolved already, taken as they are)."""
        if task is None or isinstance(task, str):
            spec = self._model.resolve_task(task, prompt_name)
            return [spec] * count
        names = list(task)
        if len(names) != count:
            raise InvalidInput(
                f"got {len(names)} task names for {count} inputs; give one task or one per input"
            )
        if all(isinstance(name, TaskSpec) for name in names):  # resolved already (encode_text)
            return names  # type: ignore[return-value]
        cache: dict[str, TaskSpec] = {}
        return [cache.setdefault(n, self._model.resolve_task(n, prompt_name)) for n in names]

    def check_options(self, options: EncodeOptions) -> None:
        """Refuse options that do not fit this model (:meth:`EncodeOptions.check`)."""
        options.check(self.info)

    def tokenize(self, text: str) -> TokenizedText:
        """Token ids, character offsets and special flags of ``text`` as the model tokenises it."""
        return self._model.tokenize(text)

    def token_strings(self, text: str, task: str | None = None) -> list[str]:
        """The pieces of text the model sees as tokens for ``text`` under ``task`` (task prefix
        included; special tokens as ``""``), e.g. to label the rows of a query's multi-vector."""
        spec = self.resolve_tasks(task, 1)[0]
        full = spec.prefix + text
        tokens = self._model.tokenize(full)
        return [
            "" if special else full[start:end]
            for (start, end), special in zip(tokens.offsets, tokens.special)
        ]

    # ----------------------------------------------------------------- planning
    def plan(
        self,
        items: Sequence[Item],
        task: TaskArg = None,
        options: EncodeOptions | None = None,
        *,
        first_index: int = 0,
    ) -> Plan:
        """Validate and prepare ``items``; nothing runs on the model yet. Errors name an item by its
        position plus ``first_index`` (a caller planning a long input list in parts)."""
        options = options or EncodeOptions()
        self.check_options(options)
        return self._plan(items, task, options, first_index)

    def _plan(
        self, items: Sequence[Item], task: TaskArg, options: EncodeOptions, first_index: int = 0
    ) -> Plan:
        """:meth:`plan` with ``options`` checked already (once per call, at its edge)."""
        if not items:
            raise InvalidInput("no inputs given")
        tasks = self.resolve_tasks(task, len(items))
        if options.late_chunking:
            return self._plan_late_chunking(items, tasks, options)
        rows = tuple(
            self._row(i, item, spec, options)
            for i, (item, spec) in enumerate(zip(items, tasks), start=first_index)
        )
        return Plan(rows, options.output, options.dimensions, options.normalized)

    def _row(self, index: int, item: Item, spec: TaskSpec, options: EncodeOptions) -> Row:
        if isinstance(item, ImageItem):
            if "image" not in self.info.modalities:
                raise InvalidInput(f"input {index}: {self.info.name} embeds text only")
            try:
                row = self._model.image_sequence(item.image, spec, options.max_pixels)
            except UniembedError as exc:  # e.g. the aspect ratio: name the input
                raise labelled(exc, index) from exc
        elif isinstance(item, TextItem):
            ids = self._text_ids(index, item.text, spec, options)
            row = self._model.text_sequence(ids, spec)
        else:
            raise InvalidInput(f"input {index}: unsupported item type {type(item).__name__}")
        row.multivector = options.wants_multivectors
        return row

    def _text_ids(self, index: int, text: str, spec: TaskSpec, options: EncodeOptions) -> list[int]:
        ids = self._model.tokenize(spec.prefix + text).ids
        limit = options.max_tokens or self.info.max_tokens
        if len(ids) > limit:
            if not options.truncate:
                raise InputTooLarge(
                    f"input {index} has {len(ids)} tokens, more than the limit of {limit}; "
                    "shorten it or set truncate=true"
                )
            ids = ids[:limit]
        return ids

    def _plan_late_chunking(
        self, items: Sequence[Item], tasks: list[TaskSpec], options: EncodeOptions
    ) -> Plan:
        if any(not isinstance(item, TextItem) for item in items):
            raise InvalidInput("late_chunking needs text inputs only")
        if len({spec.name for spec in tasks}) != 1:
            raise InvalidInput(
                "late_chunking encodes one document: use one task for all its chunks"
            )
        text, spans = chunking.join_chunks([item.text for item in items])  # type: ignore[union-attr]
        document = self.plan_document(text, spans, tasks[0], options)
        return Plan(
            document.rows, "single", options.dimensions, options.normalized, document.pooling
        )

    def plan_document(
        self, text: str, spans: Sequence[tuple[int, int]], spec: TaskSpec, options: EncodeOptions
    ) -> chunking.DocumentPlan:
        """Late-chunking plan of one document with chunk character ``spans``."""
        window = options.window or options.max_tokens or self.info.max_tokens
        if not 1 <= window <= self.info.max_tokens:
            raise ValidationFailed(
                f"window must be between 1 and {self.info.max_tokens}, got {window}"
            )
        return chunking.plan_document(
            self._model.processor,
            text,
            spans,
            spec,
            window=window,
            overlap=options.overlap,
            truncate=options.truncate,
        )

    # ----------------------------------------------------------------- running
    def run(
        self,
        plan: Plan,
        on_batch: Callable[[int], None] | None = None,
        *,
        policy: BatchPolicy | None = None,
    ) -> EncodeResult:
        """Run a plan on the engine (sharing batches with other callers while its worker runs).

        ``policy`` replaces the engine's batch limits for this call when it runs in this thread.
        """
        return plan.assemble(self.engine.run(plan.rows, on_batch, policy))

    def _row_cap(self, batch_size: int | None) -> BatchPolicy | None:
        """The engine's policy with at most ``batch_size`` rows a batch (the official knob)."""
        if batch_size is None:
            return None
        check_int("batch_size", batch_size, error=ValidationFailed)
        return dataclasses.replace(self.engine.policy, max_batch_size=batch_size)

    def encode(
        self,
        items: Sequence[Any] | Any,
        task: TaskArg = None,
        *,
        output: Output = "single",
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

        ``items``: strings, PIL images, or dicts ``{"text"}``, ``{"image"}`` (path, URL, bytes,
        base64, data URI) and ``{"pdf"}`` (one embedding per page, in order), or items parsed
        already (:class:`~uniembed.inputs.items.TextItem`, ``ImageItem``), taken as they are.
        ``task``: one API task name (``"retrieval.query"``, ``"code.passage"``, …) or one per item.
        ``output``: ``"single"`` vectors, ``"multi"``-vectors, or ``"both"`` from one forward pass
        (single vectors in ``embeddings``, multi-vectors in ``multivectors``); ``multivector=True``
        means ``"multi"``.

        Also the official v3 call ``encode(texts, task=..., truncate_dim=...)``: ``truncate_dim`` is
        ``dimensions`` restricted to the trained Matryoshka sizes, and the result indexes, iterates
        and converts (``np.asarray``) like the official list/array of vectors.
        """
        from uniembed.inputs.parse import coerce_items_with_origin  # local: keeps import light

        if truncate_dim is not None:
            if dimensions is not None:
                raise ValidationFailed("give dimensions or truncate_dim, not both")
            check_dimensions(truncate_dim, self.info, trained_only=True)
            dimensions = truncate_dim
        if multivector:
            if output not in ("single", "multi"):
                raise ValidationFailed(
                    f"multivector=True asks for output 'multi'; it contradicts output {output!r}"
                )
            output = "multi"
        options = EncodeOptions(
            output=output,
            dimensions=dimensions,
            late_chunking=late_chunking,
            truncate=truncate,
            normalized=normalized,
            max_tokens=max_tokens,
            max_pixels=max_pixels,
        )
        self.check_options(options)  # before any input is loaded
        raw = items if isinstance(items, (list, tuple)) else [items]
        names = None if task is None or isinstance(task, str) else list(task)
        if names is not None and len(names) != len(raw):
            raise InvalidInput(f"got {len(names)} task names for {len(raw)} inputs")
        if options.late_chunking or len(raw) <= PART_ITEMS or not self._core_to_spare():
            parsed, origin = coerce_items_with_origin(raw)
            if names is not None:
                task = [names[i] for i in origin]  # a PDF's pages share its task
            return self.run(self._plan(parsed, task, options))
        return self._encode_overlapped(raw, task if names is None else names, options)

    def _core_to_spare(self) -> bool:
        """Whether preparing inputs beside the forward leaves the forward its threads: the model
        runs on an accelerator, or torch's CPU threads leave a core free. (Otherwise the helper
        thread would preempt the forward's threads, which wait for each other at every op.)"""
        return self.device.type != "cpu" or (os.cpu_count() or 1) > torch.get_num_threads()

    def _encode_overlapped(
        self, raw: Sequence[Any], task: TaskArg, options: EncodeOptions
    ) -> EncodeResult:
        """:meth:`encode` of many inputs with their preparation off the critical path: the inputs
        are taken :data:`PART_ITEMS` at a time, and one helper thread loads (decodes, renders) and
        plans (tokenises, preprocesses) the next part while the current one is in forward (when
        :meth:`_core_to_spare`). The result is the one planning everything at once gives."""
        from concurrent.futures import ThreadPoolExecutor

        from uniembed.inputs.parse import coerce_items_with_origin

        planned_items = 0  # items (pages counted) planned so far: labels errors like encode's

        def prepare(start: int) -> Plan:
            nonlocal planned_items
            part = raw[start : start + PART_ITEMS]
            parsed, origin = coerce_items_with_origin(part, first_index=start)
            tasks = task if task is None or isinstance(task, str) else [task[i] for i in origin]
            plan = self._plan(parsed, tasks, options, planned_items)
            planned_items += len(parsed)
            return plan

        starts = range(0, len(raw), PART_ITEMS)
        plans: list[Plan] = []
        outputs: list[RowOutput] = []
        with ThreadPoolExecutor(1, thread_name_prefix="uniembed-prepare") as helper:
            upcoming = helper.submit(prepare, starts[0])
            for following in [*starts[1:], None]:
                plan = upcoming.result()
                if following is not None:
                    upcoming = helper.submit(prepare, following)
                outputs += self.engine.run(plan.rows)
                plans.append(plan)
        rows = tuple(row for plan in plans for row in plan.rows)
        whole = Plan(rows, options.output, options.dimensions, options.normalized)
        return whole.assemble(outputs)

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

        Chunks are given as character ``spans`` or made by a ``chunker`` (see
        :mod:`uniembed.chunking`); documents longer than ``window`` tokens are encoded in
        overlapping windows.
        """
        if (spans is None) == (chunker is None):
            raise InvalidInput("give exactly one of spans or chunker")
        options = EncodeOptions(
            dimensions=dimensions, window=window, overlap=overlap, truncate=truncate
        )
        self.check_options(options)
        spec = self.resolve_tasks(task, 1)[0]
        if chunker is not None:
            spans = chunker(text, self._model.processor)
        document = self.plan_document(text, spans, spec, options)  # type: ignore[arg-type]
        plan = Plan(document.rows, "single", dimensions, True, document.pooling)
        return torch.stack(self.run(plan).embeddings)

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
        specs = self.resolve_tasks(task, len(batch), prompt_name)
        options = _official_options(
            self.info, truncate_dim, return_multivector, truncate=True, max_tokens=max_length
        )
        plan = self.plan([TextItem(t) for t in batch], specs, options)
        result = self.run(plan, policy=self._row_cap(batch_size))
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
        """Drop-in for the official ``encode_image``: PIL images, paths, URLs, bytes, base64, data
        URIs."""
        from uniembed.inputs.parse import coerce_image_items

        single = not isinstance(images, (list, tuple))
        options = _official_options(
            self.info, truncate_dim, return_multivector, max_pixels=max_pixels
        )
        items = coerce_image_items([images] if single else list(images))
        result = self.run(self.plan(items, task, options), policy=self._row_cap(batch_size))
        return _official_output(result.embeddings, single, return_multivector, return_numpy)


def _official_options(
    info: ModelInfo, truncate_dim: int | None, multivector: bool, **fields: Any
) -> EncodeOptions:
    """Options of the official ``encode_text``/``encode_image``: ``truncate_dim`` must be a trained
    size and, as in the official code, does not apply to multi-vectors."""
    check_dimensions(truncate_dim, info, trained_only=True)
    dimensions = None if multivector else truncate_dim
    return EncodeOptions(
        output="multi" if multivector else "single", dimensions=dimensions, **fields
    )


def _official_output(
    embeddings: list[torch.Tensor], single: bool, multivector: bool, as_numpy: bool
) -> Any:
    """Shape results like the official code: one tensor for one input, else a list (or an array)."""
    if single:
        return embeddings[0].numpy() if as_numpy else embeddings[0]
    if as_numpy and not multivector:
        return np.stack([e.numpy() for e in embeddings])
    return [e.numpy() for e in embeddings] if as_numpy else embeddings


__all__ = ["Embedder", "EncodeOptions", "EncodeResult", "Plan"]
