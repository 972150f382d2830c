"""Property: a row's embedding never depends on its batch (padding, order, neighbours' tasks or
modalities), for every model family, checked through the real batching engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from uniembed.embedder import Embedder, EncodeOptions
from uniembed.engine import BatchPolicy
from uniembed.inputs.items import ImageItem, TextItem

WORDS = st.sampled_from(["sun", "panel", "energy", "太陽", "énergie", "cell", "light", "code", "def", "return", "x"])
TEXTS = st.lists(WORDS, min_size=1, max_size=40).map(" ".join)
V4_TASKS = st.sampled_from(["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"])


def image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((90 + 14 * (seed % 5), 60))


ITEMS = st.one_of(TEXTS.map(TextItem), st.integers(0, 20).map(lambda s: ImageItem(image(s))))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(ITEMS, V4_TASKS), min_size=2, max_size=7), budget=st.integers(40, 400),
       multivector=st.booleans())
def test_v4_batching_never_changes_an_embedding(tiny_v4: Embedder, data, budget: int, multivector: bool) -> None:
    items, tasks = [d[0] for d in data], [d[1] for d in data]
    options = EncodeOptions(multivector=multivector)
    batched = Embedder(tiny_v4.model, BatchPolicy(token_budget=budget, max_batch_size=8))
    together = batched.run(batched.plan(items, tasks, options)).embeddings
    reversed_ = batched.run(batched.plan(items[::-1], tasks[::-1], options)).embeddings[::-1]
    for item, task, a, b in zip(items, tasks, together, reversed_):
        alone = tiny_v4.run(tiny_v4.plan([item], task, options)).embeddings[0]
        assert a.shape == alone.shape
        torch.testing.assert_close(a, alone, atol=2e-5, rtol=0)
        torch.testing.assert_close(b, alone, atol=2e-5, rtol=0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, dims=st.integers(1, 64))
def test_v4_dimensions_are_renormalised_prefixes(tiny_v4: Embedder, text: str, dims: int) -> None:
    full = tiny_v4.encode([text], "retrieval.passage").embeddings[0]
    cut = tiny_v4.encode([text], "retrieval.passage", dimensions=dims).embeddings[0]
    torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:dims], dim=0), atol=1e-6, rtol=0)
    assert cut.norm().item() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, task=V4_TASKS)
def test_v4_multivector_rows_equal_non_pad_tokens(tiny_v4: Embedder, text: str, task: str) -> None:
    plan = tiny_v4.plan([TextItem(text), TextItem(text + " and a much longer neighbour " * 3)], task,
                        EncodeOptions(multivector=True))
    result = tiny_v4.run(plan)
    for sequence, multi in zip(plan.sequences, result.embeddings):
        assert multi.shape == (sequence.num_tokens, tiny_v4.info.multivector_dim)
