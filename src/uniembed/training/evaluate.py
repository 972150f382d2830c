"""Evaluation during training: nDCG@10 for retrieval data, Spearman for graded pairs.

Embeddings come from the ordinary inference path (:meth:`Embedder.encode`), so what is measured is
what will be served. nDCG is :func:`uniembed.core.ranking.compute_metrics`'s (pytrec_eval), the
figure ``uniembed eval`` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from uniembed._optional import require
from uniembed.core.ranking import compute_metrics
from uniembed.core.scores import maxsim_scores, pad_multivectors
from uniembed.models.base import PASSAGE, QUERY
from uniembed.training.data import EvalData, GradedEval, RetrievalEval

TOP_K = 100  # documents per query handed to pytrec_eval
PRIMARY = {"retrieval": "ndcg@10", "graded": "spearman"}


def primary_metric(data: EvalData) -> str:
    """The metric that picks the best checkpoint."""
    return PRIMARY["graded" if isinstance(data, GradedEval) else "retrieval"]


def evaluate(
    embedder: Any, data: EvalData, tasks: Mapping[str, str], max_tokens: int
) -> dict[str, float]:
    """Metrics of ``embedder`` on ``data``; ``tasks`` maps ``query`` / ``passage`` to API task
    names.

    Retrieval: ``ndcg@10`` from cosine similarity of single vectors and, for models with
    multi-vectors, ``ndcg@10_late`` from MaxSim. Graded pairs: ``spearman``.
    """
    if isinstance(data, GradedEval):
        first = _encode(embedder, data.firsts, tasks[QUERY], max_tokens, "single").embeddings
        second = _encode(embedder, data.seconds, tasks[PASSAGE], max_tokens, "single").embeddings
        cosines = (torch.stack(first) * torch.stack(second)).sum(-1)
        return {"spearman": spearman(cosines.tolist(), data.scores)}
    return _retrieval(embedder, data, tasks, max_tokens)


def _retrieval(
    embedder: Any, data: RetrievalEval, tasks: Mapping[str, str], max_tokens: int
) -> dict[str, float]:
    late = embedder.info.multivector_dim is not None
    output = "both" if late else "single"
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    queries = _encode(embedder, list(data.queries.values()), tasks[QUERY], max_tokens, output)
    documents = _encode(embedder, list(data.corpus.values()), tasks[PASSAGE], max_tokens, output)
    dense = torch.stack(queries.embeddings) @ torch.stack(documents.embeddings).T  # (queries, docs)
    metrics = {"ndcg@10": ndcg_at_10(data.qrels, _run(dense, query_ids, doc_ids))}
    if late:
        q, q_mask = pad_multivectors(queries.multivectors)
        d, d_mask = pad_multivectors(documents.multivectors)
        scores = maxsim_scores(q, d, q_mask, d_mask)  # a ranking per query: no length division
        metrics["ndcg@10_late"] = ndcg_at_10(data.qrels, _run(scores, query_ids, doc_ids))
    return metrics


def _encode(embedder: Any, items: list[Any], task: str, max_tokens: int, output: str) -> Any:
    return embedder.encode(items, task=task, output=output, truncate=True, max_tokens=max_tokens)


def _run(
    scores: torch.Tensor, query_ids: list[str], doc_ids: list[str]
) -> dict[str, dict[str, float]]:
    """Each query's top documents as a pytrec_eval run."""
    top = scores.topk(min(TOP_K, scores.shape[1]), dim=1)
    return {
        query: {doc_ids[j]: float(s) for s, j in zip(values.tolist(), indices.tolist())}
        for query, values, indices in zip(query_ids, top.values, top.indices)
    }


def ndcg_at_10(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> float:
    """Mean nDCG@10 over the judged queries of ``run``, as ``uniembed eval`` computes it.

    >>> ndcg_at_10({"q": {"a": 1}}, {"q": {"a": 0.2, "b": 0.9}})  # the relevant one ranked second
    0.6309297535714575
    """
    return compute_metrics(qrels, {q: dict(d) for q, d in run.items()}, [10])["ndcg@10"]


def spearman(predicted: list[float], gold: list[float]) -> float:
    """Spearman rank correlation (ties get average ranks), as MTEB reports for STS.

    >>> spearman([0.1, 0.4, 0.3], [1, 3, 2])
    1.0
    """
    stats = require("scipy.stats", "train", "Spearman correlation")
    return float(stats.spearmanr(predicted, gold).statistic)
