"""Padding-free (packed) batches equal the padded reference path, for every family, task, modality
and output, through the model contract and through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import uniembed
from uniembed.embedder import Embedder
from uniembed.engine.planning import BatchPolicy
from uniembed.inputs.items import ImageItem, TextItem
from uniembed.models.base import Row
from uniembed.models.lora import AdapterRouting, LoraWeights, MultiLoRALinear
from uniembed.models.packing import Packing
from uniembed.plans import EncodeOptions

ATOL = 1e-5
V4_TASKS = ["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"]
V3_TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]
WORDS = st.sampled_from(["sun", "panel", "太陽", "énergie", "cell", "def", "return", "x"])
TEXTS = st.lists(WORDS, min_size=1, max_size=60).map(" ".join)


def image(seed: int, width: int = 90, height: int = 60) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((width, height))


def text(words: int) -> str:
    return " ".join(["solar", "panel", "grid", "cell", "light"] * words)[: 6 * words]


@pytest.fixture(scope="module")
def padded_v4(tiny_v4_path: Path) -> Embedder:
    return uniembed.load(tiny_v4_path, device="cpu", packing=False)


@pytest.fixture(scope="module")
def padded_v3(tiny_v3_path: Path) -> Embedder:
    return uniembed.load(tiny_v3_path, device="cpu", packing=False)


def assert_same_outputs(padded: list, packed: list) -> None:
    assert len(padded) == len(packed)
    for a, b in zip(padded, packed):
        torch.testing.assert_close(b.pooled, a.pooled, atol=ATOL, rtol=0)
        assert (a.multivector is None) == (b.multivector is None)
        if a.multivector is not None:
            torch.testing.assert_close(b.multivector, a.multivector, atol=ATOL, rtol=0)


# ----------------------------------------------------------------- the model contract
def test_v4_packed_forward_equals_padded_for_every_task_modality_and_output(
    tiny_v4: Embedder,
) -> None:
    items = [TextItem(text(k)) for k in (1, 40, 7, 3, 25)]
    items += [ImageItem(image(1)), ImageItem(image(2, 140, 60)), ImageItem(image(3, 60, 200))]
    tasks = V4_TASKS + ["retrieval.passage", "code.query", "text-matching"]
    rows = tiny_v4.plan(items, tasks, EncodeOptions(output="both")).rows
    rows[2].multivector = False  # single and multi-vector rows side by side
    model = tiny_v4._model
    assert_same_outputs(model.forward(rows), model.forward_packed(rows))


def test_v4_packed_rows_never_see_each_other(tiny_v4: Embedder) -> None:
    """Every row packed with others equals the row alone (causal attention must not leak)."""
    items = [TextItem(text(30)), ImageItem(image(4)), TextItem(text(2))]
    rows = tiny_v4.plan(items, ["code.passage", "retrieval.query", "text-matching"]).rows
    model = tiny_v4._model
    together = model.forward_packed(rows)
    for row, got in zip(rows, together):
        assert_same_outputs(model.forward([row]), [got])


def test_v3_packed_forward_equals_padded_for_every_task_and_none(tiny_v3: Embedder) -> None:
    items = [TextItem(text(k)) for k in (30, 1, 12, 5, 50, 9)]
    tasks = [*V3_TASKS, None]
    model = tiny_v3._model
    rows = [tiny_v3.plan([item], task).rows[0] for item, task in zip(items, tasks)]
    assert_same_outputs(model.forward(rows), model.forward_packed(rows))
    assert model.forward_packed([]) == []


def test_packing_orders_rows_by_adapter_and_routes_each_token() -> None:
    rows = [
        Row(torch.tensor([1, 2]), 2, ((0, 2),)),
        Row(torch.tensor([3]), -1, ((0, 1),)),
        Row(torch.tensor([4, 5, 6]), 2, ((0, 3),)),
    ]
    packing = Packing.of(rows)
    assert packing.order == (1, 0, 2)
    assert packing.input_ids(rows).tolist() == [[3, 1, 2, 4, 5, 6]]
    assert packing.token_adapters(rows).tolist() == [-1, 2, 2, 2, 2, 2]
    assert packing.positions(rows).tolist() == [[0, 0, 1, 0, 1, 2]]
    assert [packing.slice_of(i) for i in range(3)] == [slice(1, 3), slice(0, 1), slice(3, 6)]
    kwargs = packing.attention_kwargs(torch.device("cpu"))
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 1, 3, 6] and kwargs["max_length_q"] == 3


def test_token_routing_equals_row_routing() -> None:
    torch.manual_seed(0)
    weights = LoraWeights(torch.randn(3, 2, 8), torch.randn(3, 5, 2), scaling=0.5)
    routing = AdapterRouting()
    layer = MultiLoRALinear(torch.nn.Linear(8, 5), weights, routing)
    x = torch.randn(3, 4, 8)  # three rows of four tokens
    adapters = torch.tensor([2, -1, 0])
    with routing.use(adapters):
        by_row = layer(x)
    with routing.use_tokens(adapters.repeat_interleave(4)):
        by_token = layer(x.reshape(1, 12, 8))
    torch.testing.assert_close(by_token.reshape(3, 4, 5), by_row)
    with routing.use(torch.tensor([-1])):
        torch.testing.assert_close(layer(x[1:2]), by_row[1:2])  # -1: the base weights


# ----------------------------------------------------------------- through the engine
def test_v4_encode_packed_equals_padded_with_images_multivectors_and_late_chunking(
    tiny_v4: Embedder, padded_v4: Embedder
) -> None:
    items = [text(20), image(5), text(3), image(6, 200, 80), text(60)]
    for output in ("single", "multi", "both"):
        dims = None if output == "multi" else 32
        packed = tiny_v4.encode(items, V4_TASKS, output=output, dimensions=dims)
        padded = padded_v4.encode(items, V4_TASKS, output=output, dimensions=dims)
        for kind in ("embeddings", "multivectors") if output == "both" else ("embeddings",):
            for a, b in zip(getattr(padded, kind), getattr(packed, kind)):
                torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    chunks = [text(9), text(30), text(2)]
    for task in ("retrieval.passage", "code.query"):
        packed = tiny_v4.encode(chunks, task, late_chunking=True).embeddings
        padded = padded_v4.encode(chunks, task, late_chunking=True).embeddings
        torch.testing.assert_close(torch.stack(packed), torch.stack(padded), atol=ATOL, rtol=0)


def test_v3_long_late_chunking_packed_equals_padded(tiny_v3: Embedder, padded_v3: Embedder) -> None:
    document = " ".join(f"sentence {i} about solar cells." for i in range(40))
    spans = [(0, 300), (300, 700), (700, len(document))]
    for task in ("retrieval.passage", "text-matching"):
        args = {"spans": spans, "task": task, "window": 64, "overlap": 16}
        packed = tiny_v3.embed_document(document, **args)
        padded = padded_v3.embed_document(document, **args)
        torch.testing.assert_close(packed, padded, atol=ATOL, rtol=0)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.tuples(
            st.one_of(TEXTS.map(TextItem), st.integers(0, 9).map(lambda s: ImageItem(image(s)))),
            st.sampled_from(V4_TASKS),
        ),
        min_size=1,
        max_size=8,
    ),
    budget=st.integers(30, 600),
    output=st.sampled_from(["single", "multi", "both"]),
)
def test_v4_any_batch_packed_equals_padded(
    tiny_v4: Embedder, padded_v4: Embedder, data, budget: int, output: str
) -> None:
    items, tasks = [d[0] for d in data], [d[1] for d in data]
    options = EncodeOptions(output=output)
    packed_policy = BatchPolicy(budget, 8, packed=True)
    padded_policy = BatchPolicy(budget, 8, packed=False)
    packed = tiny_v4.run(tiny_v4.plan(items, tasks, options), policy=packed_policy)
    padded = padded_v4.run(padded_v4.plan(items, tasks, options), policy=padded_policy)
    for kind in ("embeddings", "multivectors") if output == "both" else ("embeddings",):
        for a, b in zip(getattr(padded, kind), getattr(packed, kind)):
            torch.testing.assert_close(b, a, atol=ATOL, rtol=0)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.tuples(TEXTS, st.sampled_from([*V3_TASKS, None])), min_size=1, max_size=8),
    dims=st.sampled_from([None, 8]),
)
def test_v3_any_batch_packed_equals_padded(
    tiny_v3: Embedder, padded_v3: Embedder, data, dims: int | None
) -> None:
    texts = [d[0] for d in data]
    model = tiny_v3._model
    rows = [tiny_v3.plan([TextItem(t)], task).rows[0] for t, task in data]
    assert_same_outputs(model.forward(rows), model.forward_packed(rows))
    tasks = [d[1] or "text-matching" for d in data]
    packed = tiny_v3.encode(texts, tasks, dimensions=dims).embeddings
    padded = padded_v3.encode(texts, tasks, dimensions=dims).embeddings
    torch.testing.assert_close(torch.stack(packed), torch.stack(padded), atol=ATOL, rtol=0)
