"""The engine: batch planning (token budget, row cap, long inputs alone), order restored, one
loop."""

from __future__ import annotations

import pickle
import threading
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from uniembed.engine.loop import Engine
from uniembed.engine.planning import BatchPolicy, plan_batches
from uniembed.errors import BatchFailed
from uniembed.inputs.items import ImageItem, TextItem
from uniembed.models.base import PatchGrid, Row, RowOutput
from uniembed.plans import EncodeOptions


@given(
    lengths=st.lists(st.integers(1, 3000), min_size=0, max_size=80),
    budget=st.integers(1, 5000),
    rows=st.integers(1, 16),
)
def test_batches_cover_every_item_once_within_budget(
    lengths: list[int], budget: int, rows: int
) -> None:
    policy = BatchPolicy(token_budget=budget, max_batch_size=rows, packed=False)
    batches = plan_batches(lengths, policy)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= rows
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # an over-budget item runs alone


@given(
    lengths=st.lists(st.integers(1, 3000), min_size=0, max_size=80),
    budget=st.integers(1, 5000),
    rows=st.integers(1, 16),
)
def test_packed_batches_budget_real_tokens(lengths: list[int], budget: int, rows: int) -> None:
    policy = BatchPolicy(token_budget=budget, max_batch_size=rows, packed=True)
    batches = plan_batches(lengths, policy)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch, following in zip(batches, [*batches[1:], None]):
        assert 1 <= len(batch) <= rows
        assert sum(lengths[i] for i in batch) <= budget or len(batch) == 1
        if following and len(batch) < rows:  # full: the next row would not have fitted
            assert sum(lengths[i] for i in batch) + lengths[following[0]] > budget


def test_sorting_reduces_padding_against_input_order() -> None:
    lengths = [5, 400, 6, 390, 7, 380, 8, 370]
    batches = plan_batches(lengths, BatchPolicy(800, 2, packed=False))
    assert [sorted(lengths[i] for i in b) for b in batches] == [
        [390, 400],
        [370, 380],
        [7, 8],
        [5, 6],
    ]


def test_far_longer_input_gets_its_own_batch() -> None:
    batches = plan_batches([10, 10, 100_000, 10], BatchPolicy(1000, 64, packed=False))
    assert batches == [[2], [0, 1, 3]]


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(token_budget=0)


def test_run_restores_input_order_reports_progress_and_counts_padding() -> None:
    rows = [Row(torch.arange(n), adapter=0, spans=((0, n),)) for n in (3, 9, 1, 5)]
    seen: list[list[int]] = []
    progress: list[int] = []

    def forward(batch):
        seen.append([r.num_tokens for r in batch])
        return [RowOutput(pooled=torch.tensor([[float(r.num_tokens)]])) for r in batch]

    engine = Engine(forward, BatchPolicy(token_budget=10, max_batch_size=8, packed=False))
    outputs = engine.run(rows, progress.append)
    assert [float(o.pooled) for o in outputs] == [3.0, 9.0, 1.0, 5.0]
    assert seen == [[9], [5, 3], [1]] and progress == [1, 2, 1]
    totals = engine.totals
    assert (totals.batches, totals.rows, totals.tokens, totals.padded_tokens) == (
        3,
        4,
        18,
        9 + 10 + 1,
    )


def test_packed_policy_runs_the_packed_forward_and_counts_no_padding() -> None:
    rows = [Row(torch.arange(n), adapter=0, spans=((0, n),)) for n in (3, 9, 1, 5)]
    calls: list[tuple[str, list[int]]] = []

    def forward(kind: str):
        def run(batch):
            calls.append((kind, [r.num_tokens for r in batch]))
            return [RowOutput(pooled=torch.tensor([[float(r.num_tokens)]])) for r in batch]

        return run

    policy = BatchPolicy(token_budget=10, max_batch_size=8, packed=True)
    engine = Engine(forward("padded"), policy, forward_packed=forward("packed"))
    assert [float(o.pooled) for o in engine.run(rows)] == [3.0, 9.0, 1.0, 5.0]
    assert calls == [("packed", [9]), ("packed", [5, 3, 1])]
    assert (engine.totals.tokens, engine.totals.padded_tokens) == (18, 18)
    calls.clear()
    engine.run(rows, policy=BatchPolicy(10, 8, packed=False))  # padded reference
    assert calls == [("padded", [9]), ("padded", [5, 3]), ("padded", [1])]
    calls.clear()
    padded_only = Engine(forward("padded"), policy)  # a model that cannot pack: padded budgets
    padded_only.run(rows)
    assert calls == [("padded", [9]), ("padded", [5, 3]), ("padded", [1])]
    assert padded_only.totals.padded_tokens == 9 + 10 + 1


def test_a_failing_batch_raises_the_models_error_here_and_the_engine_keeps_working() -> None:
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [RowOutput(pooled=torch.zeros(1, 1)) for _ in batch]

    engine = Engine(forward)
    rows = [Row(torch.arange(3), adapter=0, spans=((0, 3),))]
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.run(rows)
    assert engine.totals.failed_batches == 1
    assert len(engine.run(rows)) == 1
    calls.clear()
    engine.start()
    try:  # through the worker: every waiting job gets BatchFailed, the cause chained
        with pytest.raises(BatchFailed) as failure:
            engine.run(rows)
        assert isinstance(failure.value.__cause__, RuntimeError)
    finally:
        engine.stop()


def test_run_goes_through_the_queue_while_the_worker_runs_and_inline_otherwise() -> None:
    threads: list[str] = []

    def forward(batch):
        threads.append(threading.current_thread().name)
        return [RowOutput(pooled=torch.zeros(1, 1)) for _ in batch]

    engine = Engine(forward, name="m")
    rows = [Row(torch.arange(2), adapter=0, spans=((0, 2),))]
    engine.run(rows)
    engine.start()
    try:
        engine.run(rows)
    finally:
        engine.stop()
    engine.run(rows)
    here = threading.current_thread().name
    assert threads == [here, "uniembed-engine-m", here]


def test_plans_are_picklable_values(tiny_v4) -> None:
    plan = tiny_v4.plan(
        [TextItem("solar panels"), ImageItem(Image.new("RGB", (56, 84), "red"))],
        "retrieval.passage",
        EncodeOptions(output="both", dimensions=16),
    )
    copy = pickle.loads(pickle.dumps(plan))
    assert [row.num_tokens for row in copy.rows] == [row.num_tokens for row in plan.rows]
    here = plan.assemble(tiny_v4.engine.run(plan.rows))
    there = copy.assemble(tiny_v4.engine.run(copy.rows))
    assert all(torch.equal(a, b) for a, b in zip(here.embeddings, there.embeddings))
    assert all(torch.equal(a, b) for a, b in zip(here.multivectors, there.multivectors))
    assert here.patch_grids[0] is None and here.patch_grids[1] == PatchGrid(
        start=4, height=3, width=2
    )  # 84x56 px: 3x2 cells of 28 px


def _closed_loop_batches(max_gather_seconds: float) -> list[int]:
    """Batch sizes when half of 8 callers come back right after their answer while the other half
    waits in the queue: the alternation that halves every batch without gathering."""
    sizes: list[int] = []
    running = threading.Event()

    def forward(batch):
        sizes.append(len(batch))
        running.set()
        time.sleep(0.3)
        return [RowOutput(pooled=torch.zeros(1, 1)) for _ in batch]

    engine = Engine(forward, BatchPolicy(token_budget=10_000, max_batch_size=64))
    row = [Row(torch.arange(2), adapter=0, spans=((0, 2),))]
    engine.start(max_gather_seconds=max_gather_seconds)
    try:
        first = engine.submit(row * 4)  # half A (one job, so it starts as one batch) runs alone
        assert running.wait(10)
        others = [engine.submit(row) for _ in range(4)]  # half B queues while A runs
        first.future.result(10)  # A's callers come back as soon as they are answered
        again = [engine.submit(row) for _ in range(4)]
        for job in others + again:
            job.future.result(10)
    finally:
        engine.stop()
    return sizes


def test_a_round_gathers_the_callers_the_last_round_served() -> None:
    assert _closed_loop_batches(max_gather_seconds=1.0) == [4, 8]  # waits ≤ 0.2 × 0.3 s for A
    assert _closed_loop_batches(max_gather_seconds=0.0) == [4, 4, 4]  # without: halves alternate


# ----------------------------------------------------------------- preparation overlapped
def test_encode_prepares_the_next_part_while_one_runs_and_equals_planning_at_once(
    tiny_v4,
) -> None:
    import io

    from uniembed.embedder import PART_ITEMS
    from uniembed.inputs.parse import coerce_items_with_origin
    from uniembed.testing.pdfs import blank_pdf

    png = io.BytesIO()
    Image.new("RGB", (90, 60), (200, 30, 30)).save(png, format="PNG")
    raw: list = [f"text number {i} " * (1 + i % 7) for i in range(PART_ITEMS + 5)]
    raw[3] = {"image": png.getvalue()}
    raw[PART_ITEMS + 1] = {"pdf": blank_pdf(3, 200, 100)}  # a later part: three pages
    tasks = ["retrieval.passage", "code.query", "text-matching"] * len(raw)
    tasks = tasks[: len(raw)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a core to spare for the helper thread (on a machine of 2 or more)
    try:
        got = tiny_v4.encode(raw, tasks, output="both")
    finally:
        torch.set_num_threads(threads)
    parsed, origin = coerce_items_with_origin(raw)
    expected = tiny_v4.run(
        tiny_v4.plan(parsed, [tasks[i] for i in origin], EncodeOptions(output="both"))
    )
    assert len(got.embeddings) == len(raw) + 2 and got.token_counts == expected.token_counts
    assert got.patch_grids == expected.patch_grids
    for kind in ("embeddings", "multivectors"):
        for a, b in zip(getattr(got, kind), getattr(expected, kind)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_an_invalid_input_in_a_later_part_is_named_by_its_own_index(tiny_v4) -> None:
    from uniembed.embedder import PART_ITEMS
    from uniembed.errors import InvalidInput

    raw: list = ["fine"] * (PART_ITEMS + 3)
    raw[PART_ITEMS + 2] = {"image": b"not an image"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(InvalidInput, match=f"input {PART_ITEMS + 2}:"):
            tiny_v4.encode(raw)
    finally:
        torch.set_num_threads(threads)
