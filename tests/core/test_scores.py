"""Score functions against direct loop formulations, colpali-engine's formula and invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uniembed.core.scores import (
    cosine,
    dot,
    hamming_maxsim,
    hamming_maxsim_ragged,
    maxsim,
    maxsim_ragged,
    pad_multivectors,
    unpack_signs,
)
from uniembed.core.vectors import binarize


def loop_maxsim(query: torch.Tensor, doc: torch.Tensor) -> float:
    """The definition, one token pair at a time."""
    total = 0.0
    for q in query.double():
        total += max(float(q @ d) for d in doc.double())
    return total


def loop_hamming_maxsim(query_bits: torch.Tensor, doc_bits: torch.Tensor, dim: int) -> int:
    """Σ_i max_j (dim - 2·popcount(q_i xor d_j)) with Python integers."""

    def as_int(row: torch.Tensor) -> int:
        return int.from_bytes(bytes(row.tolist()), "big") >> (8 * row.shape[0] - dim)

    return sum(
        max(dim - 2 * (as_int(q) ^ as_int(d)).bit_count() for d in doc_bits) for q in query_bits
    )


def random_docs(seed: int, count: int, max_tokens: int, dim: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_tokens + 1, (count,), generator=generator).tolist()
    return [torch.randn(n, dim, generator=generator) for n in lengths]


shapes = st.tuples(
    st.integers(0, 2**16),
    st.integers(1, 9),
    st.integers(1, 7),
    st.integers(1, 6),
    st.integers(1, 12),
)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 40))
def test_maxsim_equals_the_loop_over_padded_and_ragged_docs(shape: tuple, chunk_rows: int) -> None:
    seed, count, max_tokens, query_tokens, dim = shape
    docs = random_docs(seed, count, max_tokens, dim)
    query = torch.randn(query_tokens, dim, generator=torch.Generator().manual_seed(seed + 1))
    expected = torch.tensor([loop_maxsim(query, d) for d in docs], dtype=torch.float64)
    padded, mask = pad_multivectors(docs)
    lengths = torch.tensor([d.shape[0] for d in docs])
    got_padded = maxsim(query, padded, mask, chunk_rows=chunk_rows)
    got_ragged = maxsim_ragged(query, torch.cat(docs), lengths, chunk_rows=chunk_rows)
    assert got_padded.dtype == torch.float32
    torch.testing.assert_close(got_padded.double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_ragged, got_padded, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 4096])
@pytest.mark.parametrize(
    "lengths",
    [
        [16] * 40,  # one length: every block takes the view-and-amax path
        [1, 2, 3, 50, 4, 4, 4, 4, 9, 1, 130, 2],  # ragged: numpy's reduceat path
        [8] * 20 + [3, 70] + [8] * 20,  # runs of one length beside ragged stretches
    ],
)
def test_the_float16_kernel_equals_the_loop_on_ragged_docs(
    lengths: list[int], chunk_rows: int
) -> None:
    generator = torch.Generator().manual_seed(len(lengths) + chunk_rows)
    docs = [
        torch.nn.functional.normalize(torch.randn(n, 128, generator=generator), dim=-1).half()
        for n in lengths
    ]
    query = torch.nn.functional.normalize(torch.randn(24, 128, generator=generator), dim=-1)
    expected = torch.tensor([loop_maxsim(query, d.float()) for d in docs], dtype=torch.float64)
    got = maxsim_ragged(query, torch.cat(docs), torch.tensor(lengths), chunk_rows=chunk_rows)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5)
    padded, mask = pad_multivectors(docs)
    torch.testing.assert_close(maxsim(query, padded, mask, chunk_rows=chunk_rows), got)


def test_maxsim_equals_colpali_score_multi_vector_on_non_negative_matches() -> None:
    # colpali-engine: pad with zeros, einsum("bnd,csd->bcns"), max over doc tokens, sum over query
    # tokens
    docs = [torch.nn.functional.normalize(d.abs(), dim=-1) for d in random_docs(3, 5, 7, 16)]
    queries = [torch.nn.functional.normalize(torch.rand(n, 16), dim=-1) for n in (3, 6)]
    padded_q = torch.nn.utils.rnn.pad_sequence(queries, batch_first=True)
    padded_d = torch.nn.utils.rnn.pad_sequence(docs, batch_first=True)
    colpali = torch.einsum("bnd,csd->bcns", padded_q, padded_d).max(dim=3)[0].sum(dim=2)  # (q, d)
    padded, mask = pad_multivectors(docs)
    ours = torch.stack([maxsim(q, padded, mask) for q in queries])
    torch.testing.assert_close(ours, colpali)


def test_maxsim_scores_float16_storage_in_float32() -> None:
    docs = random_docs(5, 4, 6, 32)
    query = torch.randn(3, 32)
    padded, mask = pad_multivectors(docs)
    half = maxsim(query.half(), padded.half(), mask)
    assert half.dtype == torch.float32
    expected = maxsim(query.half().float(), padded.half().float(), mask)
    torch.testing.assert_close(half, expected, rtol=0, atol=0)


def test_maxsim_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="query must be"):
        maxsim(torch.ones(2, 3), torch.ones(1, 2, 4))
    with pytest.raises(ValueError, match="mask"):
        maxsim(torch.ones(2, 4), torch.ones(1, 2, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="lengths sum"):
        maxsim_ragged(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([1, 1]))


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_hamming_maxsim_equals_popcount_loop_and_sign_maxsim(shape: tuple) -> None:
    seed, count, max_tokens, query_tokens, dim = shape
    docs = random_docs(seed, count, max_tokens, dim)
    query = torch.randn(query_tokens, dim, generator=torch.Generator().manual_seed(seed + 1))
    doc_bits = [binarize(d) for d in docs]
    query_bits = binarize(query)
    expected = torch.tensor(
        [loop_hamming_maxsim(query_bits, b, dim) for b in doc_bits], dtype=torch.float32
    )
    padded, mask = pad_multivectors(doc_bits)
    lengths = torch.tensor([d.shape[0] for d in docs])
    assert torch.equal(hamming_maxsim(query_bits, padded, mask, dim=dim), expected)
    assert torch.equal(
        hamming_maxsim_ragged(query_bits, torch.cat(doc_bits), lengths, dim=dim), expected
    )
    signs = [torch.where(d > 0, 1.0, -1.0) for d in docs]
    sign_padded, _ = pad_multivectors(signs)
    assert torch.equal(maxsim(torch.where(query > 0, 1.0, -1.0), sign_padded, mask), expected)


def test_unpack_signs_inverts_binarize() -> None:
    vectors = torch.randn(4, 5, 13)
    assert torch.equal(unpack_signs(binarize(vectors), dim=13), torch.where(vectors > 0, 1.0, -1.0))


def test_dense_scores_equal_the_loop() -> None:
    query, docs = torch.randn(7), torch.randn(5, 7)
    expected_dot = torch.tensor([float(query @ d) for d in docs])
    expected_cos = torch.tensor([float(query @ d / (query.norm() * d.norm())) for d in docs])
    torch.testing.assert_close(dot(query, docs), expected_dot)
    torch.testing.assert_close(cosine(query, docs), expected_cos)
    assert cosine(torch.randn(3, 7), docs).shape == (3, 5)
