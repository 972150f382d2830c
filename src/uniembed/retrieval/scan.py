"""Every stored multi-vector in memory, scored with torch: the index's exact MaxSim and the first
stage of binary search.

Why not the store's own full scan: on the 2-core machine of BENCHMARKS.md, torch's chunked MaxSim
over float16 rows was ~3× faster than qdrant-edge's exact scan of the same vectors (qdrant-edge
scores one point at a time; torch runs matrix products over thousands of rows). The copy costs
memory (float16: the stored bytes again; binary: 1/16 of them) and a one-time load from the store.

The index keeps the scan in step with its writes (:meth:`MultivectorScan.add` /
:meth:`MultivectorScan.remove` after each store operation). Writers replace an immutable tuple of
blocks; a search reads the tuple once, so it sees every document whole or not at all.

Blocks are merged like a binary counter (a new block swallows its predecessor while it is at least
half its size), so there are O(log n) blocks and each row is copied O(log n) times; a block that has
lost most of its documents to deletes is rewritten without them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from uniembed.core.scores import hamming_maxsim_ragged, maxsim_ragged
from uniembed.core.vectors import binarize, to_float16

Codec = Literal["float16", "binary"]


@dataclass(frozen=True)
class _Block:
    point_ids: tuple[str, ...]
    doc_ids: tuple[str, ...]
    lengths: torch.Tensor  # (m,) rows per point
    rows: torch.Tensor  # (sum(lengths), d) float16, or (…, d / 8) uint8 sign bits
    alive: torch.Tensor  # (m,) bool

    @property
    def live_count(self) -> int:
        return int(self.alive.sum())

    def without_dead(self) -> _Block:
        if bool(self.alive.all()):
            return self
        keep = self.alive.nonzero().flatten().tolist()
        return _Block(
            tuple(self.point_ids[i] for i in keep),
            tuple(self.doc_ids[i] for i in keep),
            self.lengths[keep],
            self.rows[self.alive.repeat_interleave(self.lengths)],
            torch.ones(len(keep), dtype=torch.bool),
        )


def _merge(first: _Block, second: _Block) -> _Block:
    first, second = first.without_dead(), second.without_dead()
    return _Block(
        first.point_ids + second.point_ids,
        first.doc_ids + second.doc_ids,
        torch.cat([first.lengths, second.lengths]),
        torch.cat([first.rows, second.rows]),
        torch.cat([first.alive, second.alive]),
    )


class MultivectorScan:
    """The multi-vectors of an index in memory (``codec`` float16 or binary), searchable by
    MaxSim."""

    def __init__(self, codec: Codec, dim: int) -> None:
        self.codec = codec
        self.dim = dim
        self._blocks: tuple[_Block, ...] = ()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(block.live_count for block in self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of vectors held (what a search reads)."""
        return sum(block.rows.numel() * block.rows.element_size() for block in self._blocks)

    def add(
        self, point_ids: Sequence[str], doc_ids: Sequence[str], multivectors: Sequence[torch.Tensor]
    ) -> None:
        """Add points (their ids must not be in the scan: remove replaced documents first)."""
        if not point_ids:
            return
        encode = to_float16 if self.codec == "float16" else binarize
        block = _Block(
            tuple(point_ids),
            tuple(doc_ids),
            torch.tensor([m.shape[0] for m in multivectors]),
            torch.cat([encode(m) for m in multivectors]),
            torch.ones(len(point_ids), dtype=torch.bool),
        )
        with self._lock:
            blocks = [*self._blocks, block]
            while len(blocks) >= 2 and 2 * blocks[-1].rows.shape[0] >= blocks[-2].rows.shape[0]:
                blocks[-2:] = [_merge(blocks[-2], blocks[-1])]
            self._blocks = tuple(blocks)

    def remove(self, doc_ids: Sequence[str]) -> None:
        """Drop every point of the documents ``doc_ids``."""
        gone = set(doc_ids)
        with self._lock:
            blocks = []
            for block in self._blocks:
                hit = torch.tensor([d in gone for d in block.doc_ids], dtype=torch.bool)
                if bool((hit & block.alive).any()):
                    block = _Block(
                        block.point_ids,
                        block.doc_ids,
                        block.lengths,
                        block.rows,
                        block.alive & ~hit,
                    )
                    if 2 * block.live_count < len(block.point_ids):
                        block = block.without_dead()
                if block.point_ids:
                    blocks.append(block)
            self._blocks = tuple(blocks)

    def search(
        self, query: torch.Tensor, k: int, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best (point id, score) by MaxSim (float16) or Hamming MaxSim (binary) of
        ``query`` (tokens, d), among ``allowed`` point ids when given."""
        best: list[tuple[str, float]] = []
        encoded_query = binarize(query) if self.codec == "binary" else query
        for block in self._blocks:  # one read of the tuple: a consistent snapshot
            mask = block.alive
            if allowed is not None:
                mask = mask & torch.tensor(
                    [p in allowed for p in block.point_ids], dtype=torch.bool
                )
            if not bool(mask.any()):
                continue
            scores = self._score(encoded_query, block).masked_fill(~mask, float("-inf"))  # (m,)
            top = torch.topk(scores, min(k, int(mask.sum())))
            best.extend(
                (block.point_ids[i], s) for s, i in zip(top.values.tolist(), top.indices.tolist())
            )
        best.sort(key=lambda pair: -pair[1])
        return best[:k]

    def _score(self, query: torch.Tensor, block: _Block) -> torch.Tensor:
        if self.codec == "binary":
            return hamming_maxsim_ragged(query, block.rows, block.lengths, dim=self.dim)
        return maxsim_ragged(query, block.rows, block.lengths)
