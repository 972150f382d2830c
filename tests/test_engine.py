"""Batch planning: token budget, row cap, order restored, long inputs alone."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from uniembed.engine import BatchPolicy, plan_batches, run_sequences
from uniembed.models.base import Row, RowOutput


@given(lengths=st.lists(st.integers(1, 3000), min_size=0, max_size=80), budget=st.integers(1, 5000),
       rows=st.integers(1, 16))
def test_batches_cover_every_item_once_within_budget(lengths: list[int], budget: int, rows: int) -> None:
    batches = plan_batches(lengths, BatchPolicy(token_budget=budget, max_batch_size=rows))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= rows
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # an over-budget item runs alone


def test_sorting_reduces_padding_against_input_order() -> None:
    lengths = [5, 400, 6, 390, 7, 380, 8, 370]
    batches = plan_batches(lengths, BatchPolicy(token_budget=800, max_batch_size=2))
    assert [sorted(lengths[i] for i in b) for b in batches] == [[390, 400], [370, 380], [7, 8], [5, 6]]


def test_far_longer_input_gets_its_own_batch() -> None:
    batches = plan_batches([10, 10, 100_000, 10], BatchPolicy(token_budget=1000, max_batch_size=64))
    assert batches == [[2], [0, 1, 3]]


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(token_budget=0)


def test_run_sequences_restores_input_order_and_reports_progress() -> None:
    rows = [Row(torch.arange(n), adapter=0, spans=((0, n),)) for n in (3, 9, 1, 5)]
    seen: list[list[int]] = []
    progress: list[int] = []

    def forward(batch):
        seen.append([r.num_tokens for r in batch])
        return [RowOutput(pooled=torch.tensor([[float(r.num_tokens)]])) for r in batch]

    outputs = run_sequences(rows, forward, BatchPolicy(token_budget=10, max_batch_size=8), progress.append)
    assert [float(o.pooled) for o in outputs] == [3.0, 9.0, 1.0, 5.0]
    assert seen == [[9], [5, 3], [1]] and progress == [1, 2, 1]
