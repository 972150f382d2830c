"""Every task adapter resident at once; each row of a batch uses its own.

Adapted layers wrap the original module and read the per-row adapter indices from one shared
:class:`AdapterRouting`, which the model sets around each forward pass. Rows whose adapter is
``-1`` use the base weights only. Rows are grouped by adapter, so a batch of one task costs one
extra pair of thin matrix products per layer, and a mixed batch one pair per task present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

NO_ADAPTER = -1


class AdapterRouting:
    """The adapter index of every row of the batch being run (shared by all adapted layers)."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # (batch,) int64
        self.groups: list[tuple[int, torch.Tensor | None]] = []  # (adapter, row indices or None = all)

    @contextmanager
    def use(self, rows: torch.Tensor) -> Iterator[None]:
        """Route rows to adapters for the duration of one forward pass."""
        self.rows = rows
        self.groups = _group_rows(rows)
        try:
            yield
        finally:
            self.rows, self.groups = None, []


def _group_rows(rows: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
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
    """A wrapped layer, its stacked per-task factors and the shared routing."""

    def __init__(
        self, base: nn.Module, weights: LoraWeights, routing: AdapterRouting, shapes: tuple, layer: str
    ) -> None:
        super().__init__()
        if (tuple(weights.A.shape), tuple(weights.B.shape)) != shapes:
            raise ValueError(
                f"LoRA shapes A{tuple(weights.A.shape)} B{tuple(weights.B.shape)} do not fit {layer}"
            )
        self.base = base
        self.lora_A = nn.Parameter(weights.A.to(base.weight.dtype), requires_grad=False)
        self.lora_B = nn.Parameter(weights.B.to(base.weight.dtype), requires_grad=False)
        self.scaling = weights.scaling
        self.routing = routing


class MultiLoRALinear(_RoutedLora):
    """``y = base(x) + scaling · B[t] A[t] x`` with ``t`` the adapter of x's row (dim 0)."""

    def __init__(self, base: nn.Linear, weights: LoraWeights, routing: AdapterRouting) -> None:
        tasks, rank = weights.A.shape[:2]
        shapes = ((tasks, rank, base.in_features), (tasks, base.out_features, rank))
        layer = f"Linear({base.in_features}, {base.out_features})"
        super().__init__(base, weights, routing, shapes, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # fresh output: the deltas are added to it in place, scaling fused
        for adapter, rows in self.routing.groups:
            a, b = self.lora_A[adapter], self.lora_B[adapter]  # (r, in), (out, r)
            if rows is None:
                flat = y.view(-1, y.shape[-1])  # (tokens, out)
                flat.addmm_(x.reshape(-1, x.shape[-1]) @ a.T, b.T, alpha=self.scaling)
            else:
                picked = x[rows]  # (rows, …, in)
                delta = (picked.reshape(-1, x.shape[-1]) @ a.T) @ b.T  # (rows · …, out)
                y.index_add_(0, rows, delta.view(*picked.shape[:-1], -1), alpha=self.scaling)
        return y


def attach_lora(
    root: nn.Module, layers: Mapping[str, LoraWeights], routing: AdapterRouting
) -> list[str]:
    """Replace each ``nn.Linear`` named in ``layers`` (dotted path under ``root``) by a
    :class:`MultiLoRALinear`. Returns the adapted paths; unknown paths raise ``KeyError``."""
    adapted = []
    for path, weights in layers.items():
        parent_path, _, name = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        base = getattr(parent, name, None)
        if not isinstance(base, nn.Linear):
            raise KeyError(f"no nn.Linear at {path!r} to attach a LoRA adapter to")
        setattr(parent, name, MultiLoRALinear(base, weights, routing))
        adapted.append(path)
    return adapted


class MultiLoRAEmbedding(_RoutedLora):
    """``y = base(ids) + scaling · A[t][ids] B[t]`` with ``t`` the adapter of the ids' row (dim 0).

    Embedding factors are stored the other way round from :class:`MultiLoRALinear` (as in the
    official jina-embeddings-v3 checkpoint): ``A`` (tasks, num_embeddings, r) and ``B`` (tasks, r, dim),
    so the task's table is ``weight + scaling · A[t] @ B[t]``; only the looked-up rows of ``A`` are used.
    """

    def __init__(self, base: nn.Embedding, weights: LoraWeights, routing: AdapterRouting) -> None:
        tasks, _, rank = weights.A.shape
        shapes = ((tasks, base.num_embeddings, rank), (tasks, rank, base.embedding_dim))
        layer = f"Embedding({base.num_embeddings}, {base.embedding_dim})"
        super().__init__(base, weights, routing, shapes, layer)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y = self.base(ids)
        for adapter, rows in self.routing.groups:
            a, b = self.lora_A[adapter], self.lora_B[adapter]  # (num_embeddings, r), (r, dim)
            if rows is None:
                y = y + (nn.functional.embedding(ids, a) @ b) * self.scaling
            else:
                delta = (nn.functional.embedding(ids[rows], a) @ b) * self.scaling  # (rows, …, dim)
                y.index_add_(0, rows, delta)  # y is fresh from base: update it in place
        return y
