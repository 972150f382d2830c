"""Retrieval metrics computed by pytrec_eval, equal to what MTEB 2 (and BEIR) report for a run.

* ``ndcg@k``   — pytrec_eval ``ndcg_cut.k`` (graded gains, trec_eval's DCG);
* ``recall@k`` — ``recall.k``: judged-relevant items in the top k over all judged-relevant items;
* ``map@k``    — ``map_cut.k``: average precision over the top k (MTEB's and BEIR's ``MAP@k``);
* ``mrr@k``    — ``recip_rank`` on the run cut to its top k: 1 / rank of the first relevant item
  within the top k, else 0. This is MTEB's ``mrr_at_k`` (its own loop, ties broken by item id
  descending to match pytrec_eval). BEIR's ``MRR@k`` is the same sum but divided by every query
  in the qrels; the two agree whenever every judged query is in the run, as here.

Every metric is the mean over the judged queries present in the run (pytrec_eval evaluates the
queries that both have), as MTEB averages. Items ranked with equal scores are ordered by id
descending (trec_eval's order); a grade of 0 or less is not relevant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from uniembed._optional import require
from uniembed.core.files import atomic_path

Run = dict[str, dict[str, float]]  # query id -> {corpus id: score}
Qrels = Mapping[str, Mapping[str, int]]
DEFAULT_K = (1, 5, 10, 100)
METRICS = ("ndcg", "recall", "mrr", "map")
_MEASURES = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut"}


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """Items best first, ties by id descending — the order trec_eval (and MTEB) rank a run in.

    >>> ranked({"a": 0.5, "b": 0.9, "c": 0.5})
    [('b', 0.9), ('c', 0.5), ('a', 0.5)]
    """
    return sorted(scores.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)


def cut(run: Run, k: int) -> Run:
    """Each query's top ``k`` items in :func:`ranked` order."""
    return {query: dict(ranked(scores)[:k]) for query, scores in run.items()}


def per_query_metrics(
    qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K
) -> dict[str, dict[str, float]]:
    """``{query: {"ndcg@10": …, "recall@10": …, "map@10": …, "mrr@10": …}}`` for every judged
    query in ``run``."""
    pytrec_eval = require("pytrec_eval", "eval", "retrieval metrics")
    ks = ",".join(str(k) for k in sorted(set(k_values)))
    qrels = {query: dict(docs) for query, docs in qrels.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"{m}.{ks}" for m in _MEASURES.values()})
    raw = evaluator.evaluate(run)
    results = {
        query: {
            f"{name}@{k}": values[f"{measure}_{k}"]
            for name, measure in _MEASURES.items()
            for k in k_values
        }
        for query, values in raw.items()
    }
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    for k in k_values:
        for query, values in reciprocal.evaluate(cut(run, k)).items():
            results[query][f"mrr@{k}"] = values["recip_rank"]
    return results


def compute_metrics(
    qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K
) -> dict[str, float]:
    """Mean of each metric over the judged queries in ``run`` (see the module docstring).

    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    >>> run = {"q1": {"d1": 0.9, "d2": 0.1}, "q2": {"d1": 0.8, "d2": 0.2}}
    >>> compute_metrics(qrels, run, [1, 2])["mrr@2"]  # 1/1 and 1/2
    0.75
    """
    per_query = per_query_metrics(qrels, run, k_values)
    if not per_query:
        return {f"{metric}@{k}": 0.0 for metric in METRICS for k in k_values}
    names = [f"{metric}@{k}" for metric in METRICS for k in k_values]
    return {
        name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names
    }


def format_trec_run(run: Run, tag: str) -> str:
    """A run as TREC run-file lines ``query Q0 doc rank score tag`` (ranks from 1, trec_eval order).

    >>> print(format_trec_run({"q1": {"d1": 0.5, "d2": 0.75}}, "dense"), end="")
    q1 Q0 d2 1 0.75 dense
    q1 Q0 d1 2 0.5 dense
    """
    lines = [
        f"{query} Q0 {doc} {rank} {score!r} {tag}"
        for query, scores in run.items()
        for rank, (doc, score) in enumerate(ranked(scores), start=1)
    ]
    return "".join(line + "\n" for line in lines)


def write_trec_run(run: Run, path: Path, tag: str) -> None:
    """Write ``run`` as a TREC run file (atomically); ids must not contain whitespace."""
    with atomic_path(path) as tmp:
        tmp.write_text(format_trec_run(run, tag), encoding="utf-8")
