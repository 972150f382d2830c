"""The vectors of a list of items: single vectors and multi-vectors from the same forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encodings:
    """``single[i]`` is item i's single vector (full size, L2-normalised); its multi-vector is rows
    ``offsets[i]:offsets[i+1]`` of ``multi`` (one L2-normalised row per token)."""

    single: torch.Tensor  # (items, dim) float32
    multi: torch.Tensor  # (all tokens, multivector_dim) float32
    lengths: torch.Tensor  # (items,) int64: multi-vector rows of each item
    token_counts: torch.Tensor  # (items,) int64: tokens the model ran for each item

    def __len__(self) -> int:
        return int(self.single.shape[0])

    @property
    def offsets(self) -> torch.Tensor:
        """(items + 1,) start row of each item's multi-vector, then the total.

        >>> Encodings.empty(4, 2).offsets.tolist()
        [0]
        """
        return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(self.lengths, 0)])

    def multivector(self, index: int) -> torch.Tensor:
        """(tokens, multivector_dim) rows of item ``index``."""
        offsets = self.offsets
        return self.multi[offsets[index] : offsets[index + 1]]

    def multivectors(self) -> list[torch.Tensor]:
        """Every item's multi-vector (views into ``multi``)."""
        return list(torch.split(self.multi, self.lengths.tolist()))

    @classmethod
    def empty(cls, dim: int, multivector_dim: int) -> Encodings:
        return cls(
            torch.zeros(0, dim),
            torch.zeros(0, multivector_dim),
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
        )

    @classmethod
    def from_vectors(
        cls,
        single: Sequence[torch.Tensor],
        multi: Sequence[torch.Tensor],
        token_counts: Sequence[int],
    ) -> Encodings:
        """From per-item vectors (an ``EncodeResult`` with ``output="both"``)."""
        return cls(
            torch.stack([v.float() for v in single]),
            torch.cat([m.float() for m in multi]),
            torch.tensor([m.shape[0] for m in multi], dtype=torch.int64),
            torch.tensor(list(token_counts), dtype=torch.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[Encodings]) -> Encodings:
        return cls(
            *(
                torch.cat([getattr(p, name) for p in parts])
                for name in ("single", "multi", "lengths", "token_counts")
            )
        )

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays to save (``np.savez``)."""
        return {
            name: getattr(self, name).numpy()
            for name in ("single", "multi", "lengths", "token_counts")
        }

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray]) -> Encodings:
        return cls(
            *(
                torch.from_numpy(np.ascontiguousarray(arrays[name]))
                for name in ("single", "multi", "lengths", "token_counts")
            )
        )
