"""Similarity maps: for an image or page hit, how much each image patch matches each query token.

``scores[i, y, x] = ⟨q_i, d(y, x)⟩`` — the dot product MaxSim takes its maximum over, for the patch
in row ``y``, column ``x`` of the page's patch grid (v4: 28 × 28-pixel cells of the resized image).
A page stored pooled keeps, per patch, the pooled row it fell into, so its map is drawn from the
vectors that are actually scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SimilarityMap:
    """Per query token (``tokens`` labels), a ``height × width`` grid of patch scores."""

    tokens: list[str]
    scores: torch.Tensor  # (tokens, height, width) float32

    @property
    def height(self) -> int:
        return int(self.scores.shape[1])

    @property
    def width(self) -> int:
        return int(self.scores.shape[2])

    def to_json(self, decimals: int = 4) -> dict[str, Any]:
        rounded = torch.round(self.scores, decimals=decimals)
        return {
            "tokens": self.tokens,
            "height": self.height,
            "width": self.width,
            "scores": rounded.tolist(),
        }


def patch_scores(
    query: torch.Tensor,
    stored: torch.Tensor,
    grid: tuple[int, int, int],
    patch_rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Scores of each query token (q, d) against each patch of a page → (q, height, width).

    ``grid`` is ``(start, height, width)``: without pooling the patches are rows
    ``start … start + height·width - 1`` of ``stored`` (row-major); with pooling ``patch_rows``
    gives the stored row of each patch.

    >>> query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> stored = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    >>> patch_scores(query, stored, (1, 2, 2))[0].tolist()   # token 0 over the 2 × 2 patches
    [[1.0, 0.0], [0.5, 1.0]]
    >>> patch_scores(query, stored, (1, 1, 2), patch_rows=[4, 4])[1].tolist()
    [[1.0, 1.0]]
    """
    start, height, width = grid
    if patch_rows is None:
        rows = torch.arange(start, start + height * width)
    else:
        rows = torch.as_tensor(list(patch_rows), dtype=torch.long)
    if rows.numel() != height * width or int(rows.max()) >= stored.shape[0]:
        raise ValueError(
            f"patch rows do not fit a {height}x{width} grid over {stored.shape[0]} stored rows"
        )
    patches = stored.float()[rows]  # (height * width, d)
    return (query.float() @ patches.T).reshape(query.shape[0], height, width)  # (q, h, w)
