"""Batch planning: which rows run together.

Work is sorted by length and cut into batches whose *padded* size (rows × longest row) stays under
a token budget, so mixed lengths waste little padding and one very long input simply gets a batch
of its own instead of blowing up a fixed-size batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TOKEN_BUDGET = 16384  # padded tokens per forward batch
DEFAULT_MAX_BATCH_SIZE = 64  # rows per forward batch
DEFAULT_MAX_QUEUE_ROWS = 4096  # rows waiting in an engine's queue before new jobs are refused
DEFAULT_MAX_GATHER_SECONDS = 0.010  # longest wait for returning callers (Engine._gather)


@dataclass(frozen=True)
class BatchPolicy:
    """How big a batch may get: padded tokens and rows."""

    token_budget: int = DEFAULT_TOKEN_BUDGET
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_batch_size < 1:
            raise ValueError("token_budget and max_batch_size must be positive")


def padded_tokens(lengths: Sequence[int]) -> int:
    """Tokens a batch of rows of these ``lengths`` occupies once padded to the longest.

    >>> padded_tokens([3, 7, 5])
    21
    """
    return len(lengths) * max(lengths, default=0)


def plan_batches(lengths: Sequence[int], policy: BatchPolicy) -> list[list[int]]:
    """Group indices of ``lengths`` into batches, longest first.

    Each batch satisfies ``len(batch) * max(length) <= token_budget`` unless it holds a single item
    (an item longer than the budget runs alone), and ``len(batch) <= max_batch_size``.

    >>> plan_batches([5, 100, 7, 6], BatchPolicy(token_budget=120, max_batch_size=8))
    [[1], [2, 3, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = 0
    for index in order:
        length = max(1, lengths[index])
        new_max = max(current_max, length)
        fits = (len(current) + 1) * new_max <= policy.token_budget
        if current and (not fits or len(current) >= policy.max_batch_size):
            batches.append(current)
            current, new_max = [], length
        current.append(index)
        current_max = new_max
    if current:
        batches.append(current)
    return batches
