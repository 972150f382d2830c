"""Every task adapter resident at once; each row of a batch uses its own.

Adapted layers wrap the original module and read which adapter each row (padded batches) or each
token (packed batches, :mod:`uniembed.models.packing`) uses from one shared :class:`AdapterRouting`,
which the model sets around each forward pass. Rows whose adapter is ``-1`` use the base weights
only. Rows (tokens) are grouped by adapter, so a batch of one task costs one extra pair of thin
matrix products per layer, and a mixed batch one pair per task present.

Each adapter's factors are Parameters of their own (one entry per adapter in ``lora_A`` /
``lora_B``), so an adapter can be added at run time (:meth:`add_adapter`) without touching the
others, and one adapter can be trained while the rest stay frozen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from uniembed.models.quantized import Int8Linear

NO_ADAPTER = -1


# Which part of a batch an adapter applies to: None = all of it; a tensor = row indices on dim 0
# (padded batches); a slice = a range of tokens of the flattened batch (packed batches).
Selector = torch.Tensor | slice | None


class AdapterRouting:
    """The adapter of every row (or token) of the batch being run (shared by all adapted layers)."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # (batch,) or (tokens,) int64
        self.groups: list[tuple[int, Selector]] = []

    @contextmanager
    def use(self, rows: torch.Tensor) -> Iterator[None]:
        """Route rows (dim 0 of every adapted input) to adapters for one forward pass."""
        with self._routed(rows, _group_rows(rows)):
            yield

    @contextmanager
    def use_tokens(self, tokens: torch.Tensor) -> Iterator[None]:
        """Route each token of a packed batch (inputs ``(1, tokens, …)``) to its adapter
        (``tokens``: one adapter index per token) for one forward pass. Each run of equal adapters
        becomes one slice: rows packed by adapter give one slice per adapter present."""
        with self._routed(tokens, _group_tokens(tokens)):
            yield

    @contextmanager
    def _routed(self, rows: torch.Tensor | None, groups: list) -> Iterator[None]:
        previous = self.rows, self.groups
        self.rows, self.groups = rows, groups
        try:
            yield
        finally:
            self.rows, self.groups = previous

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """``context_fn`` for non-reentrant ``torch.utils.checkpoint``: a checkpointed layer is
        recomputed during the backward pass, when the forward's routing is long gone; the second
        context puts back the routing the layer ran with."""
        return nullcontext(), self._routed(self.rows, self.groups)


def _group_tokens(tokens: torch.Tensor) -> list[tuple[int, Selector]]:
    """Runs of equal adapters → (adapter, token slice); a single adapter → all tokens.

    >>> _group_tokens(torch.tensor([0, 0, -1, 2, 2, 2]))
    [(0, slice(0, 2, None)), (2, slice(3, 6, None))]
    """
    adapters, counts = torch.unique_consecutive(tokens, return_counts=True)
    if len(adapters) == 1:
        return _group_rows(adapters)
    groups: list[tuple[int, Selector]] = []
    start = 0
    for adapter, count in zip(adapters.tolist(), counts.tolist()):
        if adapter != NO_ADAPTER:
            groups.append((adapter, slice(start, start + count)))
        start += count
    return groups


def _group_rows(rows: torch.Tensor) -> list[tuple[int, Selector]]:
    adapters = [int(a) for a in torch.unique(rows).tolist()]
    if len(adapters) == 1:
        return [] if adapters[0] == NO_ADAPTER else [(adapters[0], None)]
    return [(a, torch.nonzero(rows == a).flatten()) for a in adapters if a != NO_ADAPTER]


@dataclass(frozen=True)
class LoraWeights:
    """Stacked per-task factors of one layer: ``A`` (tasks, r, in) and ``B`` (tasks, out, r)."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float


class _RoutedLora(nn.Module):
    """A wrapped layer, its per-adapter factors and the shared routing."""

    def __init__(
        self,
        base: nn.Module,
        weights: LoraWeights,
        routing: AdapterRouting,
        shapes: tuple,
        layer: str,
    ) -> None:
        super().__init__()
        if (tuple(weights.A.shape), tuple(weights.B.shape)) != shapes:
            raise ValueError(
                f"LoRA shapes A{tuple(weights.A.shape)} B{tuple(weights.B.shape)} do not fit "
                f"{layer}"
            )
        self.base = base
        dtype = getattr(base, "compute_dtype", None) or base.weight.dtype  # int8: float32
        self.lora_A = nn.ParameterList([_frozen(a, dtype) for a in weights.A.unbind(0)])
        self.lora_B = nn.ParameterList([_frozen(b, dtype) for b in weights.B.unbind(0)])
        self.scaling = weights.scaling
        self.routing = routing

    def add_adapter(self, a: nn.Parameter, b: nn.Parameter) -> int:
        """Append one adapter's factors (shaped like the existing ones); returns its index."""
        if a.shape != self.lora_A[0].shape or b.shape != self.lora_B[0].shape:
            raise ValueError(
                f"new adapter A{tuple(a.shape)} B{tuple(b.shape)} does not fit this layer's "
                f"A{tuple(self.lora_A[0].shape)} B{tuple(self.lora_B[0].shape)}"
            )
        self.lora_A.append(a)
        self.lora_B.append(b)
        return len(self.lora_A) - 1

    def factors(self, adapter: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``A``, ``B`` of one adapter in ``dtype`` (trained factors may be kept in float32 while
        the base weights and activations are bf16)."""
        a, b = self.lora_A[adapter], self.lora_B[adapter]
        if a.dtype != dtype:
            a, b = a.to(dtype), b.to(dtype)
        return a, b


def _frozen(tensor: torch.Tensor, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(tensor.to(dtype), requires_grad=False)


class MultiLoRALinear(_RoutedLora):
    """``y = base(x) + scaling · B[t] A[t] x`` with ``t`` the adapter of x's row (dim 0)."""

    def __init__(
        self, base: nn.Linear | Int8Linear, weights: LoraWeights, routing: AdapterRouting
    ) -> None:
        tasks, rank = weights.A.shape[:2]
        shapes = ((tasks, rank, base.in_features), (tasks, base.out_features, rank))
        layer = f"Linear({base.in_features}, {base.out_features})"
        super().__init__(base, weights, routing, shapes, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # fresh output: the deltas are added to it in place, scaling fused
        for adapter, rows in self.routing.groups:
            a, b = self.factors(adapter, y.dtype)  # (r, in), (out, r)
            if rows is None or isinstance(rows, slice):  # all tokens, or a packed token range
                part = slice(None) if rows is None else rows
                flat = y.view(-1, y.shape[-1])[part]  # (tokens, out)
                flat.addmm_(x.reshape(-1, x.shape[-1])[part] @ a.T, b.T, alpha=self.scaling)
            else:
                picked = x[rows]  # (rows, …, in)
                delta = (picked.reshape(-1, x.shape[-1]) @ a.T) @ b.T  # (rows · …, out)
                y.index_add_(0, rows, delta.view(*picked.shape[:-1], -1), alpha=self.scaling)
        return y


def attach_lora(
    root: nn.Module, layers: Mapping[str, LoraWeights], routing: AdapterRouting
) -> list[str]:
    """Replace each ``nn.Linear`` (or :class:`~uniembed.models.quantized.Int8Linear`) named in
    ``layers`` (dotted path under ``root``) by a :class:`MultiLoRALinear`. Returns the adapted
    paths; unknown paths raise ``KeyError``."""
    adapted = []
    for path, weights in layers.items():
        parent_path, _, name = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        base = getattr(parent, name, None)
        if not isinstance(base, (nn.Linear, Int8Linear)):
            raise KeyError(f"no nn.Linear at {path!r} to attach a LoRA adapter to")
        setattr(parent, name, MultiLoRALinear(base, weights, routing))
        adapted.append(path)
    return adapted


class MultiLoRAEmbedding(_RoutedLora):
    """``y = base(ids) + scaling · A[t][ids] B[t]`` with ``t`` the adapter of the ids' row (dim 0).

    Embedding factors are stored the other way round from :class:`MultiLoRALinear` (as in the
    official jina-embeddings-v3 checkpoint): ``A`` (tasks, num_embeddings, r) and ``B`` (tasks, r,
    dim), so the task's table is ``weight + scaling · A[t] @ B[t]``; only the looked-up rows of
    ``A`` are used.
    """

    def __init__(self, base: nn.Embedding, weights: LoraWeights, routing: AdapterRouting) -> None:
        tasks, _, rank = weights.A.shape
        shapes = ((tasks, base.num_embeddings, rank), (tasks, rank, base.embedding_dim))
        layer = f"Embedding({base.num_embeddings}, {base.embedding_dim})"
        super().__init__(base, weights, routing, shapes, layer)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y = self.base(ids)
        for adapter, rows in self.routing.groups:
            a, b = self.factors(adapter, y.dtype)  # (num_embeddings, r), (r, dim)
            if rows is None:
                y = y + (nn.functional.embedding(ids, a) @ b).to(y.dtype) * self.scaling
            elif isinstance(rows, slice):  # a packed token range; y is fresh from base
                delta = nn.functional.embedding(ids.reshape(-1)[rows], a) @ b  # (tokens, dim)
                y.view(-1, y.shape[-1])[rows].add_(delta.to(y.dtype), alpha=self.scaling)
            else:
                delta = (nn.functional.embedding(ids[rows], a) @ b) * self.scaling  # (rows, …, dim)
                y.index_add_(0, rows, delta.to(y.dtype))  # y is fresh from base: update it in place
        return y


def routed_layers(root: nn.Module) -> dict[str, _RoutedLora]:
    """Every adapted layer under ``root`` by its dotted path."""
    return {
        path: module for path, module in root.named_modules() if isinstance(module, _RoutedLora)
    }


def fresh_factors(
    layer: _RoutedLora, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """New float32 factors for ``layer`` initialised as PEFT initialises LoRA
    (``init_lora_weights=True``), so the new adapter starts as the base weights: Linear — ``A``
    Kaiming-uniform (a = √5), ``B`` zero; Embedding — ``A`` zero, ``B`` standard normal (PEFT's
    ``lora_embedding_A`` / ``_B``, transposed to this module's layout)."""
    a = torch.empty(layer.lora_A[0].shape)
    b = torch.empty(layer.lora_B[0].shape)
    if isinstance(layer, MultiLoRAEmbedding):
        nn.init.zeros_(a)
        nn.init.normal_(b, generator=generator)
    else:
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(b)
    return a, b


def set_backbone_training(
    backbone: nn.Module, routing: AdapterRouting, enabled: bool, gradient_checkpointing: bool
) -> None:
    """Training (or eval) mode for a transformers backbone, with activation checkpointing that
    replays every layer under the routing it first ran with (see
    :meth:`AdapterRouting.checkpoint_contexts`); non-reentrant, so inputs need not require grad."""
    # transformers >= 5.2x renamed gradient_checkpointing_* to activation_checkpointing_*; the first
    # positional argument is the checkpoint kwargs in both
    enable = (
        getattr(backbone, "activation_checkpointing_enable", None)
        or backbone.gradient_checkpointing_enable
    )
    disable = (
        getattr(backbone, "activation_checkpointing_disable", None)
        or backbone.gradient_checkpointing_disable
    )
    if enabled and gradient_checkpointing:
        enable({"use_reentrant": False, "context_fn": routing.checkpoint_contexts})
    else:
        disable()
    backbone.train(enabled)


def merged_copy(root: nn.Module, adapter: int) -> nn.Module:
    """A deep copy of ``root`` with one adapter merged into plain ``nn.Linear`` / ``nn.Embedding``
    layers (``W + scaling · B A``; an embedding's ``W + scaling · A B``) and no routing: what a
    runtime that knows nothing of LoRA (an ONNX export) runs for a single task. Needs float base
    layers (not int8)."""
    import copy

    merged = copy.deepcopy(root)
    for path, layer in routed_layers(merged).items():
        base = layer.base
        if not isinstance(base, (nn.Linear, nn.Embedding)):
            raise TypeError(f"{path}: cannot merge an adapter into {type(base).__name__}")
        a, b = layer.factors(adapter, torch.float32)
        delta = (a @ b) if isinstance(layer, MultiLoRAEmbedding) else (b @ a)
        with torch.no_grad():
            base.weight += (delta * layer.scaling).to(base.weight.dtype)
        parent_path, _, name = path.rpartition(".")
        setattr(merged.get_submodule(parent_path) if parent_path else merged, name, base)
    return merged
