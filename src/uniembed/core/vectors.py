"""Operations on embedding vectors shared by every model and feature: span means, normalisation,
Matryoshka truncation, float16 and sign-bit codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from uniembed.core.wire import pack_sign_bits

Span = tuple[int, int]  # half-open token range [start, end)


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


def to_float16(vectors: torch.Tensor) -> torch.Tensor:
    """Round to float16 (unit-length rows lose at most ~5e-4 per value).

    CPU float32 goes through a compiled pass (F16C's round to nearest even, numpy's rounding): 20x
    numpy's cast on a page of 800 × 128 values, and no thread pool to wake (torch's cast of a
    page-sized tensor stalled at ~30 ms on the busy 2-core machine of BENCHMARKS.md).

    >>> to_float16(torch.tensor([0.1, 1.0])).tolist()
    [0.0999755859375, 1.0]
    """
    if vectors.device.type == "cpu" and vectors.dtype == torch.float32:
        from uniembed.core._kernels import to_half

        values = vectors.detach().contiguous()
        out = torch.empty(values.shape, dtype=torch.float16)
        to_half(values.numpy().reshape(-1), out.numpy().reshape(-1).view(np.uint8), False)
        return out
    return vectors.to(torch.float16)


def binarize(vectors: torch.Tensor) -> torch.Tensor:
    """Sign bits (``value > 0``) packed MSB-first into uint8: (…, d) → (…, ceil(d / 8)), 16 bytes
    per 128-d row; :func:`uniembed.core.scores.hamming_maxsim` scores them.

    >>> binarize(torch.tensor([[0.3, -0.1, 0.0, 2.0, 1.0, -1.0, 0.5, 0.5]])).tolist()
    [[155]]
    """
    return torch.from_numpy(pack_sign_bits(vectors.float().numpy()))
