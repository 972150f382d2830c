"""MUVERA encodings against the paper's definition written out here, and as a first stage."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uniembed.core.muvera import Muvera
from uniembed.core.scores import maxsim
from uniembed.testing.corpus import synthetic_corpus


def by_definition(muvera: Muvera, vectors: torch.Tensor, *, document: bool) -> torch.Tensor:
    """Dhulipala et al. (2024), written as loops: for each repetition, each vector's bucket is the
    bits of sign(<g_i, x>) over the Gaussian g_i; a query bucket holds the sum of its vectors, a
    document bucket their mean, an empty document bucket the vector whose bucket code is nearest in
    Hamming distance; each bucket is projected by the repetition's ±1/sqrt(d_proj) matrix."""
    parts = []
    for planes, projection in zip(muvera.planes, muvera.projections, strict=True):
        codes = []
        for x in vectors:
            bits = [int(float(x @ planes[:, i]) > 0) for i in range(muvera.simhash_bits)]
            codes.append(sum(bit << i for i, bit in enumerate(bits)))
        for bucket in range(2**muvera.simhash_bits):
            members = [x for x, code in zip(vectors, codes, strict=True) if code == bucket]
            if members:
                value = torch.stack(members).sum(0) / (len(members) if document else 1)
            elif document:
                nearest = min(range(len(codes)), key=lambda t: (codes[t] ^ bucket).bit_count())
                value = vectors[nearest]
            else:
                value = torch.zeros(muvera.dim)
            parts.append(value @ projection)
    return torch.cat(parts)


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_encodings_follow_the_definition(tokens: int, seed: int) -> None:
    muvera = Muvera(8, simhash_bits=3, projection_dim=4, repetitions=2, seed=seed)
    vectors = torch.randn(tokens, 8, generator=torch.Generator().manual_seed(seed))
    for document, encode in ((True, muvera.document), (False, muvera.query)):
        expected = by_definition(muvera, vectors, document=document)
        assert torch.allclose(encode(vectors), expected, atol=1e-5), document
    assert muvera.query(vectors).shape == (muvera.output_dim,) == (2 * 8 * 4,)


def test_a_query_encoding_adds_over_its_vectors() -> None:
    muvera = Muvera(16)
    a, b = torch.randn(5, 16), torch.randn(7, 16)
    together = muvera.query(torch.cat([a, b]))
    assert torch.allclose(together, muvera.query(a) + muvera.query(b), atol=1e-4)


def test_the_same_seed_gives_the_same_encoding_and_another_does_not() -> None:
    vectors = torch.randn(6, 32)
    assert torch.equal(Muvera(32, seed=3).document(vectors), Muvera(32, seed=3).document(vectors))
    assert not torch.equal(
        Muvera(32, seed=3).document(vectors), Muvera(32, seed=4).document(vectors)
    )


def test_as_a_first_stage_it_finds_maxsims_best_better_than_the_dense_vector() -> None:
    """On the synthetic corpus (1,000 × 32): more of the exact top 10 among the 100 best by
    encoding dot product than among the 100 best by the single dense vector."""
    corpus = synthetic_corpus(1000, 32, queries=40, seed=1)
    muvera = Muvera(128)
    encodings = torch.stack([muvera.document(doc) for doc in corpus.multivectors])
    found = dense = 0.0
    for query, query_dense in zip(corpus.queries, corpus.query_dense, strict=True):
        exact = set(torch.topk(maxsim(query, corpus.multivectors), 10).indices.tolist())
        by_muvera = set(torch.topk(encodings @ muvera.query(query), 100).indices.tolist())
        by_dense = set(torch.topk(corpus.dense @ query_dense, 100).indices.tolist())
        found += len(exact & by_muvera) / 10
        dense += len(exact & by_dense) / 10
    assert found / 40 >= 0.5 and found >= 1.1 * dense  # measured: 0.545 against 0.477


def test_a_batch_of_documents_encodes_as_each_document_alone() -> None:
    """``documents`` equals ``document`` one by one, empty buckets (short documents) included."""
    muvera = Muvera(32, seed=2)
    generator = torch.Generator().manual_seed(0)
    docs = [torch.randn(n, 32, generator=generator) for n in (1, 3, 40, 7, 200, 2)]
    batched = muvera.documents(docs)
    assert batched.shape == (len(docs), muvera.output_dim)
    for row, doc in zip(batched, docs, strict=True):
        assert torch.allclose(row, muvera.document(doc), atol=1e-5)
    assert muvera.documents([]).shape == (0, muvera.output_dim)
