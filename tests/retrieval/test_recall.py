"""Two-stage and compressed modes measured against exact MaxSim on a synthetic corpus, through the
real embedded store (recall@10 of the document each query was drawn from, and overlap@10 with
exact's top 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uniembed.core.scores import maxsim
from uniembed.retrieval.index import DEFAULT_CANDIDATES
from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Layout
from uniembed.retrieval.stores import create_store
from uniembed.testing.corpus import LateCorpus, synthetic_corpus

K = 10


def retriever(corpus: LateCorpus, path: Path, pool_factor: int = 1) -> Retriever:
    layout = Layout.build(
        corpus.dense.shape[1], corpus.multivectors.shape[2], {}, codecs=("float16", "binary")
    )
    opened = Retriever.open(create_store(path, layout, {}))
    corpus.write_to(opened, pool_factor, batch_rows=256 * corpus.multivectors.shape[1])
    return opened


def ranked(
    retriever: Retriever, corpus: LateCorpus, mode: str, candidates: int = DEFAULT_CANDIDATES
) -> list[list[str]]:
    return [
        [
            f.payload["id"]
            for f in retriever.search(
                corpus.query_dense[i],
                corpus.queries[i],
                K,
                mode=mode,
                candidates=candidates,
                payload=["id"],
            )
        ]
        for i in range(len(corpus.targets))
    ]


def recall(results: list[list[str]], corpus: LateCorpus) -> float:
    return sum(corpus.doc_id(int(t)) in ids for t, ids in zip(corpus.targets, results)) / len(
        results
    )


def overlap(results: list[list[str]], exact: list[list[str]]) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(results, exact)) / (K * len(exact))


@pytest.fixture(scope="module")
def corpus() -> LateCorpus:
    return synthetic_corpus(1500, 24, queries=80, seed=3)


def test_two_stage_and_binary_keep_exact_recall(corpus: LateCorpus, tmp_path: Path) -> None:
    plain = retriever(corpus, tmp_path / "plain")
    exact = ranked(plain, corpus, "multivector")
    exact_recall = recall(exact, corpus)
    assert exact_recall >= 0.95
    two_stage = ranked(plain, corpus, "two-stage")
    assert recall(two_stage, corpus) >= 0.99 * exact_recall
    assert recall(ranked(plain, corpus, "dense"), corpus) < recall(
        two_stage, corpus
    )  # the rerank matters
    binary = ranked(plain, corpus, "binary")
    assert recall(binary, corpus) >= 0.99 * exact_recall and overlap(binary, exact) >= 0.95
    torch_maxsim = [  # the scan of the token files is exact MaxSim
        [corpus.doc_id(i) for i in torch.topk(maxsim(q, corpus.multivectors), K).indices.tolist()]
        for q in corpus.queries
    ]
    assert overlap(exact, torch_maxsim) >= 0.99
    plain.close()


@pytest.mark.parametrize(("pool_factor", "least"), [(2, 0.97), (3, 0.95)])
def test_token_pooling_keeps_most_of_exact_recall(
    tmp_path: Path, pool_factor: int, least: float
) -> None:
    corpus = synthetic_corpus(400, 24, queries=80, seed=4)
    plain = retriever(corpus, tmp_path / "plain")
    exact_recall = recall(ranked(plain, corpus, "multivector"), corpus)
    pooled = retriever(corpus, tmp_path / "pooled", pool_factor)
    assert recall(ranked(pooled, corpus, "multivector"), corpus) >= least * exact_recall
    assert float16_bytes(pooled) < float16_bytes(plain) / (pool_factor - 0.5)
    plain.close()
    pooled.close()


def float16_bytes(retriever: Retriever) -> int:
    return retriever.tokens.snapshot.codes["float16"].nbytes
