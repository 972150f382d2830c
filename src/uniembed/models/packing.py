"""Padding-free batches: the rows of a batch packed into one token sequence.

A packed batch is one sequence of ``sum(row lengths)`` tokens (batch dimension 1). Every row keeps
its own positions; attention stays within each row, found from the cumulative row lengths
(``cu_seqlens``) that transformers passes to the attention function as ``cu_seq_lens_q`` /
``cu_seq_lens_k`` (its flash-attention varlen convention). Linears, the per-token adapter routing
(:meth:`uniembed.models.lora.AdapterRouting.use_tokens`) and pooling then run over real tokens
only.

The attention function is registered in transformers' ``AttentionInterface`` under
:data:`PACKED_ATTENTION` (at model load, not at import). Without packing kwargs it is transformers'
own SDPA attention (and its mask function is SDPA's), so the padded path of a model built with it is
unchanged. With them it runs, per row:

* on CUDA in float16 / bfloat16: PyTorch's varlen flash attention (``torch.nn.attention.varlen``);
* otherwise: one SDPA call per row (exact lengths: no padding, no mask, no quadratic waste
  across rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from uniembed.models.base import Row

PACKED_ATTENTION = "uniembed_packed"  # the name models built for packing set as attn_implementation
_VARLEN_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Packing:
    """Where each row of a batch sits in its packed sequence.

    ``order`` lists the batch's row indices in packed order (rows of one adapter next to each
    other, so that each adapter covers one contiguous token range); ``starts[k]`` is the first
    token of ``order[k]``, ``starts[-1]`` the total.

    >>> rows = [Row(torch.tensor([1, 2, 3]), 1, ((0, 3),)), Row(torch.tensor([4]), 0, ((0, 1),))]
    >>> packing = Packing.of(rows)
    >>> packing.order, packing.starts, packing.slice_of(0)
    ((1, 0), (0, 1, 4), slice(1, 4, None))
    """

    order: tuple[int, ...]
    starts: tuple[int, ...]

    @classmethod
    def of(cls, batch: Sequence[Row]) -> Packing:
        order = tuple(sorted(range(len(batch)), key=lambda i: batch[i].adapter))  # stable
        starts = [0]
        for index in order:
            starts.append(starts[-1] + batch[index].num_tokens)
        return cls(order, tuple(starts))

    @property
    def tokens(self) -> int:
        return self.starts[-1]

    def slice_of(self, row: int) -> slice:
        """The token range of batch row ``row`` in the packed sequence."""
        k = self.order.index(row)
        return slice(self.starts[k], self.starts[k + 1])

    def input_ids(self, batch: Sequence[Row]) -> torch.Tensor:
        """The packed ids, (1, tokens)."""
        return torch.cat([batch[i].input_ids for i in self.order]).unsqueeze(0)

    def token_adapters(self, batch: Sequence[Row]) -> torch.Tensor:
        """The adapter of every packed token, (tokens,)."""
        lengths = torch.tensor([batch[i].num_tokens for i in self.order])
        adapters = torch.tensor([batch[i].adapter for i in self.order], dtype=torch.long)
        return adapters.repeat_interleave(lengths)

    def positions(self, batch: Sequence[Row]) -> torch.Tensor:
        """Each row's own 0…n-1 positions, concatenated: (1, tokens)."""
        return torch.cat([torch.arange(batch[i].num_tokens) for i in self.order]).unsqueeze(0)

    def attention_kwargs(self, device: torch.device) -> dict:
        """The varlen kwargs transformers passes through to the attention function."""
        cu_seqlens = torch.tensor(self.starts, dtype=torch.int32, device=device)
        longest = max(b - a for a, b in zip(self.starts, self.starts[1:]))
        return {
            "cu_seq_lens_q": cu_seqlens,
            "cu_seq_lens_k": cu_seqlens,
            "max_length_q": longest,
            "max_length_k": longest,
        }


def register_packed_attention() -> None:
    """Make :data:`PACKED_ATTENTION` known to transformers (idempotent; called by the loaders)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query (1, heads, tokens, dim), key / value
    (1, kv_heads, tokens, dim) → (1, tokens, heads, dim). Padded inputs (no ``cu_seq_lens_q``) go
    to transformers' SDPA attention unchanged."""
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, **kwargs
        )
    if query.shape[0] != 1 or attention_mask is not None or dropout:
        raise ValueError("packed attention takes one packed sequence, no mask and no dropout")
    causal = bool(getattr(module, "is_causal", False))
    if query.is_cuda and query.dtype in _VARLEN_DTYPES:
        return _varlen(query, key, value, cu_seqlens, kwargs["max_length_q"], scaling, causal), None
    return _per_row(query, key, value, cu_seqlens.tolist(), scaling, causal), None


def _per_row(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    starts: list[int],
    scaling: float | None,
    causal: bool,
) -> torch.Tensor:
    """One SDPA call per row: exact lengths, no mask (CPU, or CUDA in float32)."""
    gqa = query.shape[1] != key.shape[1]
    out = query.new_empty(1, query.shape[2], query.shape[1], query.shape[3])  # (1, tokens, H, d)
    for start, stop in itertools.pairwise(starts):
        part = F.scaled_dot_product_attention(
            query[:, :, start:stop],  # (1, H, n, d)
            key[:, :, start:stop],
            value[:, :, start:stop],
            is_causal=causal,
            scale=scaling,
            enable_gqa=gqa,
        )
        out[:, start:stop] = part.transpose(1, 2)
    return out


def _varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    longest: int,
    scaling: float | None,
    causal: bool,
) -> torch.Tensor:
    """PyTorch's varlen flash attention over the packed rows (CUDA, half precision). Key / value
    heads are repeated for grouped-query attention (``enable_gqa`` is missing before torch 2.12);
    ``window_size=(-1, 0)`` is causal."""
    from torch.nn.attention.varlen import varlen_attn

    groups = query.shape[1] // key.shape[1]
    out = varlen_attn(
        query[0].transpose(0, 1),  # (tokens, H, d)
        key[0].transpose(0, 1).repeat_interleave(groups, dim=1),  # (tokens, H, d)
        value[0].transpose(0, 1).repeat_interleave(groups, dim=1),
        cu_seqlens,
        cu_seqlens,
        longest,
        longest,
        scale=scaling,
        window_size=(-1, 0) if causal else (-1, -1),
    )
    return out.unsqueeze(0)  # (1, tokens, H, d)
