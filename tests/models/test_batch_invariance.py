"""Property: a row's embedding never depends on its batch (padding, order, neighbours' tasks or
modalities), for every model family, checked through the real batching engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from uniembed.embedder import Embedder
from uniembed.engine.planning import BatchPolicy
from uniembed.inputs.items import ImageItem, TextItem
from uniembed.plans import EncodeOptions

WORDS = st.sampled_from(
    ["sun", "panel", "energy", "太陽", "énergie", "cell", "light", "code", "def", "return", "x"]
)
TEXTS = st.lists(WORDS, min_size=1, max_size=40).map(" ".join)
V4_TASKS = st.sampled_from(
    ["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"]
)


def image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((90 + 14 * (seed % 5), 60))


ITEMS = st.one_of(TEXTS.map(TextItem), st.integers(0, 20).map(lambda s: ImageItem(image(s))))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.tuples(ITEMS, V4_TASKS), min_size=2, max_size=7),
    budget=st.integers(40, 400),
    output=st.sampled_from(["single", "multi", "both"]),
)
def test_v4_batching_never_changes_an_embedding(
    tiny_v4: Embedder, data, budget: int, output: str
) -> None:
    items, tasks = [d[0] for d in data], [d[1] for d in data]
    options = EncodeOptions(output=output)
    policy = BatchPolicy(token_budget=budget, max_batch_size=8)
    together = tiny_v4.run(tiny_v4.plan(items, tasks, options), policy=policy)
    reversed_ = tiny_v4.run(tiny_v4.plan(items[::-1], tasks[::-1], options), policy=policy)
    for index, (item, task) in enumerate(zip(items, tasks)):
        alone = tiny_v4.run(tiny_v4.plan([item], task, options))
        mirrored = len(items) - 1 - index
        for kind in ("embeddings", "multivectors") if output == "both" else ("embeddings",):
            expected = getattr(alone, kind)[0]
            for got in (getattr(together, kind)[index], getattr(reversed_, kind)[mirrored]):
                assert got.shape == expected.shape
                torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(st.tuples(ITEMS, V4_TASKS), min_size=1, max_size=4), dims=st.integers(1, 64))
def test_v4_both_outputs_equal_the_single_and_multi_calls(
    tiny_v4: Embedder, data, dims: int
) -> None:
    items, tasks = [d[0] for d in data], [d[1] for d in data]
    both = tiny_v4.run(tiny_v4.plan(items, tasks, EncodeOptions(output="both", dimensions=dims)))
    single = tiny_v4.run(tiny_v4.plan(items, tasks, EncodeOptions(dimensions=dims)))
    multi = tiny_v4.run(tiny_v4.plan(items, tasks, EncodeOptions(output="multi")))
    assert both.token_counts == single.token_counts == multi.token_counts
    assert both.patch_grids == multi.patch_grids
    for a, b in zip(both.embeddings, single.embeddings):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    for a, b in zip(both.multivectors, multi.embeddings):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXTS, dims=st.integers(1, 64))
def test_v4_dimensions_are_renormalised_prefixes(tiny_v4: Embedder, text: str, dims: int) -> None:
    full = tiny_v4.encode([text], "retrieval.passage").embeddings[0]
    cut = tiny_v4.encode([text], "retrieval.passage", dimensions=dims).embeddings[0]
    torch.testing.assert_close(
        cut, torch.nn.functional.normalize(full[:dims], dim=0), atol=1e-6, rtol=0
    )
    assert cut.norm().item() == pytest.approx(1.0, abs=1e-5)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXTS, task=V4_TASKS)
def test_v4_multivector_rows_equal_non_pad_tokens(tiny_v4: Embedder, text: str, task: str) -> None:
    plan = tiny_v4.plan(
        [TextItem(text), TextItem(text + " and a much longer neighbour " * 3)],
        task,
        EncodeOptions(output="multi"),
    )
    result = tiny_v4.run(plan)
    for sequence, multi in zip(plan.rows, result.embeddings):
        assert multi.shape == (sequence.num_tokens, tiny_v4.info.multivector_dim)
