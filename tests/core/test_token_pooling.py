"""Token pooling against sentence-transformers' algorithm written out here, binarisation, the
cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster import hierarchy

from uniembed.core.token_pooling import (
    CLUSTER_BLOCK,
    cluster_tokens,
    pool_by_labels,
    pool_to_fit,
    pool_tokens,
)
from uniembed.core.vectors import binarize, to_float16
from uniembed.retrieval.store import QDRANT_MULTIVECTOR_FLOATS, max_rows_for


def unit_rows(tokens: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(tokens, dim, generator=generator), dim=-1)


def sentence_transformers_pool(
    embedding: torch.Tensor, pool_factor: int, protected: int
) -> torch.Tensor:
    """sentence-transformers 6 ``_hierarchical_pool_one``, step by step (its raw cluster means)."""
    kept, to_pool = embedding[:protected], embedding[protected:]
    count = len(to_pool)
    clusters = max(count // pool_factor, 1)
    if clusters >= count:
        return embedding
    cos_sim = torch.mm(to_pool, to_pool.t()).numpy()
    condensed = np.clip(1 - cos_sim, 0, 2)[np.triu_indices(count, k=1)]
    labels = (
        hierarchy.fcluster(
            hierarchy.linkage(condensed, method="ward"), t=clusters, criterion="maxclust"
        )
        - 1
    )
    _, inverse = torch.unique(torch.from_numpy(labels.astype(np.int64)), return_inverse=True)
    means = torch.stack([to_pool[inverse == c].mean(0) for c in range(int(inverse.max()) + 1)])
    return torch.cat([kept, means])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 120), st.sampled_from([2, 3, 4]), st.integers(0, 2), st.integers(0, 1000))
def test_pool_tokens_is_sentence_transformers_pooling_renormalised(
    tokens: int, factor: int, protected: int, seed: int
) -> None:
    embedding = unit_rows(tokens, seed=seed)
    expected = torch.nn.functional.normalize(
        sentence_transformers_pool(embedding, factor, protected), dim=-1
    )
    pooled = pool_tokens(embedding, factor, protected=protected)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-6)
    kept = min(protected, tokens)
    assert torch.allclose(pooled[:kept], embedding[:kept])  # protected tokens stay first, unchanged
    assert pooled.shape[0] <= kept + max((tokens - kept) // factor, 1)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(pooled.shape[0]))


def test_cluster_tokens_maps_every_token_to_its_pooled_row() -> None:
    embedding = unit_rows(50)
    labels = cluster_tokens(embedding, 3)
    pooled = pool_by_labels(embedding, labels)
    assert labels[0] == 0 and sorted(set(labels.tolist())) == list(range(pooled.shape[0]))
    for row in range(pooled.shape[0]):
        mean = embedding[labels == row].mean(0)
        torch.testing.assert_close(pooled[row], mean / mean.norm())


def test_pool_factor_one_keeps_every_token() -> None:
    embedding = unit_rows(9)
    assert torch.equal(cluster_tokens(embedding, 1), torch.arange(9))
    torch.testing.assert_close(pool_tokens(embedding, 1), embedding)


def test_long_inputs_are_clustered_block_by_block() -> None:
    tokens = 1 + CLUSTER_BLOCK * 2 + 300
    embedding = unit_rows(tokens, dim=8)
    labels = cluster_tokens(embedding, 2)
    blocks = [
        labels[1 : 1 + CLUSTER_BLOCK],
        labels[1 + CLUSTER_BLOCK : 1 + 2 * CLUSTER_BLOCK],
        labels[1 + 2 * CLUSTER_BLOCK :],
    ]
    assert [int(b.max() - b.min()) + 1 for b in blocks] == [
        CLUSTER_BLOCK // 2,
        CLUSTER_BLOCK // 2,
        150,
    ]
    assert int(blocks[0].max()) < int(blocks[1].min()) and int(blocks[1].max()) < int(
        blocks[2].min()
    )


def test_qdrant_cap_is_one_row_under_a_million_floats() -> None:
    assert max_rows_for(128) == 8191
    assert 8191 * 128 < QDRANT_MULTIVECTOR_FLOATS <= 8192 * 128


@pytest.mark.parametrize(("tokens", "factor", "cap"), [(40, 1, 8), (300, 2, 64), (5000, 1, 900)])
def test_pool_to_fit_meets_any_cap(tokens: int, factor: int, cap: int) -> None:
    embedding = unit_rows(tokens, dim=8)
    labels = pool_to_fit(embedding, factor, cap)
    assert int(labels.max()) + 1 <= cap
    assert labels[0] == 0  # the protected token survives
    assert len(labels) == tokens


def test_pool_to_fit_leaves_small_inputs_alone() -> None:
    embedding = unit_rows(20)
    assert torch.equal(pool_to_fit(embedding, 1, 8191), torch.arange(20))
    assert torch.equal(pool_to_fit(embedding, 2, 8191), cluster_tokens(embedding, 2))


def test_binarize_packs_sign_bits_like_numpy() -> None:
    vectors = torch.randn(3, 4, 128)
    bits = binarize(vectors)
    assert bits.dtype == torch.uint8 and bits.shape == (3, 4, 16)
    assert np.array_equal(bits.numpy(), np.packbits(vectors.numpy() > 0, axis=-1))


def test_float16_rounding_of_unit_rows_is_small() -> None:
    rows = unit_rows(100, dim=128)
    assert to_float16(rows).dtype == torch.float16
    assert float((to_float16(rows).float() - rows).abs().max()) < 2.5e-4


@pytest.mark.parametrize("portable", [False, True])
def test_float16_rounding_equals_numpys_bit_for_bit(portable: bool) -> None:
    """The compiled float32 → float16 pass (SIMD and portable) rounds as numpy does: every
    exponent range (random bit patterns: normals, subnormals, overflow to infinity), ties to
    even, signed zeros; NaN stays NaN."""
    from uniembed.core._kernels import to_half

    generator = np.random.default_rng(0)
    patterns = generator.integers(0, 2**32, 300_001, dtype=np.uint64).astype(np.uint32)
    special = [0.0, -0.0, 65504.0, 65519.99, 65520.0, -7e4, 2049.0, 2051.0, 2.98e-8, 2.99e-8]
    values = np.concatenate([patterns.view(np.float32), np.array(special, np.float32)])
    out = np.empty(values.shape, np.float16)
    to_half(values, out.view(np.uint8), portable)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16)
    nan = np.isnan(values)
    assert np.array_equal(out.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(out[nan]).all()


def test_to_float16_keeps_shape_and_takes_non_contiguous_tensors() -> None:
    rows = torch.randn(6, 5, 8)[:, ::2]  # a strided view
    half = to_float16(rows)
    assert half.shape == rows.shape and half.dtype == torch.float16
    assert np.array_equal(half.numpy(), rows.numpy().astype(np.float16))
