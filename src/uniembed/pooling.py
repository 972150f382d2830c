"""Pooling rules shared by every model: span means, normalisation, Matryoshka truncation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uniembed.models.base import Span


def mean_pool_spans(states: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
    """Mean of ``states`` (tokens, dim) over each half-open token span → (len(spans), dim).

    >>> mean_pool_spans(torch.tensor([[1.0], [3.0], [5.0]]), [(0, 2), (2, 3)]).tolist()
    [[2.0], [5.0]]
    """
    if not spans:
        return states.new_zeros((0, states.shape[-1]))
    for start, end in spans:
        if not 0 <= start < end <= states.shape[0]:
            raise ValueError(
                f"pooling span {(start, end)} is empty or outside 0..{states.shape[0]}"
            )
    return torch.stack([states[start:end].mean(0) for start, end in spans])


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension (zero vectors stay zero)."""
    return torch.nn.functional.normalize(vectors, p=2, dim=-1)


def finalize_vectors(
    raw: torch.Tensor, dimensions: int | None, normalized: bool = True
) -> torch.Tensor:
    """Official single-vector post-processing: normalise, cut to ``dimensions``, normalise again.

    Normalising before the cut does not change the direction after it, so this equals
    ``normalize(raw[..., :dimensions])``; with ``normalized=False`` the raw cut is returned.
    """
    cut = raw[..., :dimensions] if dimensions is not None else raw
    return normalize(cut) if normalized else cut
