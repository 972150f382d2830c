"""Batch planning: which rows run together.

Work is sorted by length and cut into batches whose size stays under a token budget: the *real*
tokens of a batch when it runs packed (padding-free, :mod:`uniembed.models.packing`), its *padded*
size (rows × longest row) otherwise, so mixed lengths waste little padding. One very long input
simply gets a batch of its own instead of blowing up a fixed-size batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TOKEN_BUDGET = 16384  # tokens per forward batch (real ones when packed, else padded)
DEFAULT_MAX_BATCH_SIZE = 64  # rows per forward batch
DEFAULT_MAX_QUEUE_ROWS = 4096  # rows waiting in an engine's queue before new jobs are refused
DEFAULT_MAX_GATHER_SECONDS = 0.010  # longest wait for returning callers (Engine._gather)


@dataclass(frozen=True)
class BatchPolicy:
    """How big a batch may get (tokens and rows) and whether it runs packed: padding-free, with
    the budget counting real tokens (used when the model can pack, see
    :class:`uniembed.models.base.PackableModel`)."""

    token_budget: int = DEFAULT_TOKEN_BUDGET
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    packed: bool = True  # the engine runs a model that cannot pack padded all the same

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_batch_size < 1:
            raise ValueError("token_budget and max_batch_size must be positive")


def padded_tokens(lengths: Sequence[int]) -> int:
    """Tokens a batch of rows of these ``lengths`` occupies once padded to the longest.

    >>> padded_tokens([3, 7, 5])
    21
    """
    return len(lengths) * max(lengths, default=0)


def batch_tokens(lengths: Sequence[int], packed: bool) -> int:
    """Tokens the forward pass of a batch of rows of these ``lengths`` runs on.

    >>> batch_tokens([3, 7, 5], packed=True), batch_tokens([3, 7, 5], packed=False)
    (15, 21)
    """
    return sum(lengths) if packed else padded_tokens(lengths)


def plan_batches(lengths: Sequence[int], policy: BatchPolicy) -> list[list[int]]:
    """Group indices of ``lengths`` into batches, longest first.

    Each batch satisfies ``batch_tokens(batch lengths) <= token_budget`` (packed: their sum,
    else ``len(batch) * max(length)``) unless it holds a single item (an item longer than the
    budget runs alone), and ``len(batch) <= max_batch_size``.

    >>> plan_batches([5, 100, 7, 6], BatchPolicy(token_budget=120, max_batch_size=8, packed=False))
    [[1], [2, 3, 0]]
    >>> plan_batches([5, 100, 7, 6], BatchPolicy(token_budget=115, max_batch_size=8, packed=True))
    [[1, 2, 3], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = current_sum = 0
    for index in order:
        length = max(1, lengths[index])
        new_max, new_sum = max(current_max, length), current_sum + length
        tokens = new_sum if policy.packed else (len(current) + 1) * new_max
        if current and (tokens > policy.token_budget or len(current) >= policy.max_batch_size):
            batches.append(current)
            current, new_max, new_sum = [], length, length
        current.append(index)
        current_max, current_sum = new_max, new_sum
    if current:
        batches.append(current)
    return batches
