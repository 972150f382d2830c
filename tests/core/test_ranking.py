"""Metrics equal pytrec_eval's and MTEB's on the same run, and a hand-computed example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from uniembed.core.ranking import (
    compute_metrics,
    format_trec_run,
    per_query_metrics,
    write_trec_run,
)


def test_hand_computed_example() -> None:
    # q1: relevant d1 (grade 2) and d3 (grade 1); ranking d2, d1, d3, d4
    # q2: relevant d4; ranking d1, d2, d3, d4 (found at rank 4)
    qrels = {"q1": {"d1": 2, "d3": 1}, "q2": {"d4": 1}}
    run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d3": 0.7, "d4": 0.1},
        "q2": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6},
    }
    m = per_query_metrics(qrels, run, [1, 3, 10])
    dcg = 2 / math.log2(3) + 1 / math.log2(
        4
    )  # gains 2 and 1 at ranks 2 and 3 (trec_eval: gain = grade)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["q1"]["ndcg@3"] == pytest.approx(dcg / ideal)
    assert m["q1"]["ndcg@1"] == 0.0
    assert m["q1"]["recall@1"] == 0.0 and m["q1"]["recall@3"] == 1.0
    assert m["q1"]["mrr@1"] == 0.0 and m["q1"]["mrr@3"] == 0.5
    assert m["q1"]["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert (
        m["q2"]["mrr@3"] == 0.0 and m["q2"]["mrr@10"] == 0.25
    )  # rank 4 only counts within the cut
    assert m["q2"]["ndcg@10"] == pytest.approx(1 / math.log2(5))
    mean = compute_metrics(qrels, run, [1, 3, 10])
    assert mean["mrr@10"] == pytest.approx((0.5 + 0.25) / 2)
    assert mean["recall@3"] == pytest.approx(0.5)


def test_equals_pytrec_eval_directly() -> None:
    qrels = {"a": {"x": 1, "y": 0, "z": 3}, "b": {"y": 1}}
    run = {"a": {"x": 0.2, "y": 0.9, "z": 0.5, "w": 0.5}, "b": {"x": 0.3, "y": 0.3, "w": 0.1}}
    ours = per_query_metrics(qrels, run, [1, 2, 3])
    direct = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.1,2,3", "recall.1,2,3", "map_cut.1,2,3"}
    ).evaluate(run)
    for query in qrels:
        for k in (1, 2, 3):
            assert ours[query][f"ndcg@{k}"] == direct[query][f"ndcg_cut_{k}"]
            assert ours[query][f"recall@{k}"] == direct[query][f"recall_{k}"]
            assert ours[query][f"map@{k}"] == direct[query][f"map_cut_{k}"]
    # ties: x and y tie at 0.3 for b; trec_eval ranks the larger id first, so y is at rank 1
    assert ours["b"]["mrr@1"] == 1.0


scores = st.floats(min_value=-1, max_value=1, allow_nan=False).map(
    lambda x: round(x, 1)
)  # ties happen


@st.composite
def runs_and_qrels(draw: st.DrawFn) -> tuple[dict, dict]:
    docs = [f"d{i}" for i in range(draw(st.integers(2, 12)))]
    queries = [f"q{i}" for i in range(draw(st.integers(1, 5)))]
    qrels = {
        q: {
            d: draw(st.integers(0, 3))
            for d in draw(st.lists(st.sampled_from(docs), min_size=1, unique=True))
        }
        for q in queries
    }
    run = {
        q: {d: draw(scores) for d in draw(st.lists(st.sampled_from(docs), min_size=1, unique=True))}
        for q in queries
    }
    return qrels, run


@settings(max_examples=150, deadline=None)
@given(runs_and_qrels(), st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True))
def test_equals_what_mteb_reports(data: tuple[dict, dict], k_values: list[int]) -> None:
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    qrels, run = data
    mteb = calculate_retrieval_scores(run, qrels, k_values)
    ours = compute_metrics(qrels, run, k_values)
    for k in k_values:
        assert ours[f"ndcg@{k}"] == pytest.approx(
            mteb.ndcg[f"NDCG@{k}"], abs=1e-5
        )  # MTEB rounds to 5 places
        assert ours[f"recall@{k}"] == pytest.approx(mteb.recall[f"Recall@{k}"], abs=1e-5)
        assert ours[f"map@{k}"] == pytest.approx(mteb.map[f"MAP@{k}"], abs=1e-5)
        assert ours[f"mrr@{k}"] == pytest.approx(
            mteb.mrr[f"MRR@{k}"], abs=1e-12
        )  # not rounded there


def test_trec_run_file_reads_back_in_pytrec_eval(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.5, "d2": 0.75, "d3": 0.5}, "q2": {"d9": -1.0}}
    path = tmp_path / "runs" / "dense.trec"
    write_trec_run(run, path, "dense")
    assert sorted(p.name for p in path.parent.iterdir()) == ["dense.trec"]  # no temporary left
    assert path.read_text() == format_trec_run(run, "dense")
    assert path.read_text().splitlines()[:3] == [
        "q1 Q0 d2 1 0.75 dense",
        "q1 Q0 d3 2 0.5 dense",
        "q1 Q0 d1 3 0.5 dense",
    ]
    with path.open() as lines:
        assert pytrec_eval.parse_run(lines) == run
