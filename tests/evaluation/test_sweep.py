"""One encoding, many settings: the cache (no forward on a second eval, resume after an interrupt,
nothing half-written), scores against direct formulations, and the identity dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.evaluation.builders import identity_dataset, sentences, write_beir
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.cache import EncodingCache
from uniembed.evaluation.data import RetrievalDataset
from uniembed.evaluation.encode import EncodeSettings, encode_items
from uniembed.evaluation.readers import load_dataset
from uniembed.evaluation.report import CHART_PNG, REPORT_JSON, pareto_front, write_report
from uniembed.evaluation.settings import Dense, QueryVectors
from uniembed.evaluation.specs import parse_settings
from uniembed.evaluation.sweep import EvalConfig, evaluate_retrieval

LATE_SETTINGS = ["maxsim", "maxsim-fp16", "maxsim-pool:2", "maxsim-binary:5", "two-stage:16:5"]


def dataset(count: int = 12, seed: int = 0) -> RetrievalDataset:
    docs, queries, qrels = identity_dataset(count, seed)
    return RetrievalDataset(
        "identity", list(queries), list(queries.values()), list(docs), list(docs.values()), qrels
    )


def matching(settings: list[str], **kwargs: object) -> EvalConfig:
    return EvalConfig(
        settings=settings,
        k_values=[1, 10],
        query_task="text-matching",
        corpus_task="text-matching",
        **kwargs,
    )  # type: ignore[arg-type]


def test_identity_dataset_scores_ndcg_1_under_text_matching(tiny_v4: Embedder) -> None:
    report = evaluate_retrieval(tiny_v4, dataset(), matching(["dense:all"]))
    assert [r.name for r in report.results] == [
        "dense:4",
        "dense:8",
        "dense:16",
        "dense:32",
        "dense:64",
    ]
    full = report.results[-1]
    assert (
        full.metrics["ndcg@10"] == 1.0
        and full.metrics["mrr@1"] == 1.0
        and full.metrics["recall@1"] == 1.0
    )
    assert full.stored_bytes == 64 * 4


def test_identity_dataset_scores_ndcg_1_with_exact_maxsim(tiny_v4: Embedder) -> None:
    report = evaluate_retrieval(tiny_v4, dataset(), matching(["maxsim", "two-stage:16:5"]))
    for result in report.results:
        assert result.metrics["ndcg@10"] == 1.0, result.name


def test_second_eval_with_other_settings_runs_no_forward(tiny_v4: Embedder, tmp_path: Path) -> None:
    cache = EncodingCache(tmp_path / "cache")
    data = dataset(20)
    first = evaluate_retrieval(
        tiny_v4, data, matching(["dense"], encode=EncodeSettings(chunk_size=6)), cache=cache
    )
    assert first.encoding["corpus"].chunks == 4 and first.encoding["corpus"].cached_chunks == 0
    batches = tiny_v4.engine.totals.batches
    second = evaluate_retrieval(
        tiny_v4, data, matching(["dense-int8", "dense:16", "dense:8"]), cache=cache
    )
    assert tiny_v4.engine.totals.batches == batches  # not one forward pass
    assert (
        second.encoding["corpus"].cached_chunks == 4
        and second.encoding["queries"].cached_chunks == 4
    )
    assert (
        second.encoding["corpus"].seconds == first.encoding["corpus"].seconds
    )  # throughput of the real run
    assert [r.name for r in second.results] == ["dense-int8:64", "dense:16", "dense:8"]


def test_cache_key_changes_with_task_and_content(tiny_v4: Embedder, tmp_path: Path) -> None:
    cache = EncodingCache(tmp_path / "cache")
    texts = sentences(5)
    ids = [str(i) for i in range(5)]
    encode_items(tiny_v4, ids, texts, "retrieval.passage", cache=cache)
    batches = tiny_v4.engine.totals.batches
    encode_items(tiny_v4, ids, texts, "retrieval.query", cache=cache)
    assert tiny_v4.engine.totals.batches > batches
    batches = tiny_v4.engine.totals.batches
    encode_items(tiny_v4, ids, [*texts[:4], "changed"], "retrieval.query", cache=cache)
    assert tiny_v4.engine.totals.batches > batches
    assert len(list((tmp_path / "cache").iterdir())) == 3


class Interrupt(Exception):
    pass


def test_interrupted_encoding_resumes_from_whole_chunks(tiny_v4: Embedder, tmp_path: Path) -> None:
    cache = EncodingCache(tmp_path / "cache")
    texts, ids = sentences(20, seed=3), [f"d{i}" for i in range(20)]
    done = []

    def stop_in_third_chunk(count: int) -> None:
        done.append(count)
        if sum(done) > 10:  # chunks of 4: two written, the third under way
            raise Interrupt

    with pytest.raises(Interrupt):
        encode_items(
            tiny_v4,
            ids,
            texts,
            "retrieval.passage",
            settings=EncodeSettings(chunk_size=4),
            cache=cache,
            on_progress=stop_in_third_chunk,
        )
    [entry] = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == [
        "chunk-000000.npz",
        "chunk-000001.npz",
        "manifest.json",
    ]
    rows = tiny_v4.engine.totals.rows
    resumed, stats = encode_items(
        tiny_v4,
        ids,
        texts,
        "retrieval.passage",
        settings=EncodeSettings(chunk_size=99),
        cache=cache,
    )  # the entry keeps 4
    assert stats.cached_chunks == 2 and stats.chunks == 5
    assert tiny_v4.engine.totals.rows - rows == 12  # only the missing items ran
    fresh, _ = encode_items(tiny_v4, ids, texts, "retrieval.passage")
    torch.testing.assert_close(resumed.single, fresh.single)
    torch.testing.assert_close(resumed.multi, fresh.multi)
    assert resumed.lengths.tolist() == fresh.lengths.tolist()


def test_encodings_are_the_embedders_own(tiny_v4: Embedder) -> None:
    texts = sentences(3, seed=5)
    encodings, stats = encode_items(tiny_v4, ["a", "b", "c"], texts, "retrieval.passage")
    direct = tiny_v4.encode(texts, "retrieval.passage", output="both")
    torch.testing.assert_close(encodings.single, torch.stack(direct.embeddings))
    for i in range(3):
        torch.testing.assert_close(encodings.multivector(i), direct.multivectors[i])
    assert stats.tokens == direct.total_tokens and stats.items == 3


def test_dense_settings_score_like_direct_formulas(tiny_v4: Embedder) -> None:
    texts = sentences(30, seed=9)
    corpus, _ = encode_items(tiny_v4, [str(i) for i in range(30)], texts, "retrieval.passage")
    query_enc, _ = encode_items(tiny_v4, ["q"], ["a query about cedar"], "retrieval.query")
    query = QueryVectors(query_enc.single[0], query_enc.multivector(0))
    cut = torch.nn.functional.normalize(corpus.single[:, :16].double(), dim=-1)
    q16 = torch.nn.functional.normalize(query.single[:16].double(), dim=-1)
    expected = cut @ q16
    scores, positions = Dense(16).build(corpus).search(query, 30)
    torch.testing.assert_close(scores.double(), expected[positions], rtol=0, atol=1e-6)
    assert positions.tolist() == torch.argsort(expected, descending=True).tolist()
    # int8: within the quantisation step of the float scores, and the same top item here
    scores, positions = Dense(16, "int8").build(corpus).search(query, 30)
    assert float((scores.double() - expected[positions]).abs().max()) < 16 * (2 / 255)


def test_dense_binary_scores_the_sign_vectors(tiny_v4: Embedder) -> None:
    texts = sentences(30, seed=9)
    corpus, _ = encode_items(tiny_v4, [str(i) for i in range(30)], texts, "retrieval.passage")
    query_enc, _ = encode_items(tiny_v4, ["q"], ["a query about cedar"], "retrieval.query")
    query = QueryVectors(query_enc.single[0], query_enc.multivector(0))
    signs_ = np.where(
        corpus.single[:, :16].numpy() > 0, 1, -1
    )  # the cut's renormalising keeps signs
    q_signs = np.where(query.single[:16].numpy() > 0, 1, -1)
    scores, positions = Dense(16, "binary").build(corpus).search(query, 30)
    assert scores.tolist() == (signs_ @ q_signs)[positions.numpy()].astype(float).tolist()
    assert Dense(16, "binary").build(corpus).stored_bytes == 2


def loop_maxsim(query: torch.Tensor, doc: torch.Tensor) -> float:
    """Σ over query tokens of the best dot product with any document token, as plain loops."""
    return sum(max(float(q.double() @ d.double()) for d in doc) for q in query)


def signs(rows: torch.Tensor) -> torch.Tensor:
    return torch.where(rows > 0, 1.0, -1.0).double()


def test_late_settings_score_like_direct_formulas(tiny_v4: Embedder) -> None:
    from uniembed.evaluation.settings import BinaryMaxSim, MaxSim, TwoStage

    texts = sentences(16, seed=13)
    corpus, _ = encode_items(tiny_v4, [str(i) for i in range(16)], texts, "retrieval.passage")
    query_enc, _ = encode_items(tiny_v4, ["q"], ["basil cedar meadow"], "retrieval.query")
    query = QueryVectors(query_enc.single[0], query_enc.multivector(0))
    exact = torch.tensor(
        [loop_maxsim(query.multi, corpus.multivector(i)) for i in range(16)], dtype=torch.float64
    )
    scores, positions = MaxSim().build(corpus).search(query, 16)
    torch.testing.assert_close(scores.double(), exact[positions], rtol=0, atol=1e-5)
    assert positions.tolist() == torch.argsort(exact, descending=True).tolist()
    # two-stage: the 4 best by the 16-d dense cosine, in their exact MaxSim order
    dense = torch.nn.functional.normalize(
        corpus.single[:, :16], dim=-1
    ) @ torch.nn.functional.normalize(query.single[:16], dim=0)
    candidates = torch.argsort(dense, descending=True)[:4]
    scores, positions = TwoStage(16, candidates=4).build(corpus).search(query, 10)
    assert sorted(positions.tolist()) == sorted(candidates.tolist())
    assert positions.tolist() == sorted(candidates.tolist(), key=lambda i: -float(exact[i]))
    # binary: candidates by MaxSim of the sign vectors, then the exact order among them
    coarse = torch.tensor(
        [loop_maxsim(signs(query.multi), signs(corpus.multivector(i))) for i in range(16)]
    )
    scores, positions = BinaryMaxSim(candidates=5).build(corpus).search(query, 3)
    fifth = float(
        torch.sort(coarse, descending=True).values[4]
    )  # ties at the cut may go either way
    assert all(float(coarse[i]) >= fifth for i in positions.tolist())
    assert positions.tolist() == sorted(positions.tolist(), key=lambda i: -float(exact[i]))
    torch.testing.assert_close(scores.double(), exact[positions], rtol=0, atol=1e-5)
    if int((coarse >= fifth).sum()) == 5:  # no tie at the cut: exactly the best 3 of the 5
        best = sorted(
            torch.nonzero(coarse >= fifth).flatten().tolist(), key=lambda i: -float(exact[i])
        )
        assert positions.tolist() == best[:3]


def test_late_settings_rank_and_size(tiny_v4: Embedder) -> None:
    report = evaluate_retrieval(tiny_v4, dataset(12), matching(LATE_SETTINGS))
    by_name = {r.name: r for r in report.results}
    tokens = by_name["maxsim"].stored_bytes / (128 * 4)
    assert by_name["maxsim-fp16"].stored_bytes == pytest.approx(tokens * 128 * 2)
    assert by_name["maxsim-pool:2"].stored_bytes < by_name["maxsim"].stored_bytes
    assert by_name["maxsim-binary:5"].scanned_bytes == pytest.approx(tokens * 16)
    assert by_name["two-stage:16:5"].scanned_bytes == 16 * 4
    assert by_name["maxsim"].metrics["ndcg@10"] == 1.0


def test_parse_settings_errors(tiny_v4: Embedder, tiny_v3: Embedder) -> None:
    info = tiny_v4.info
    names = [s.name for s in parse_settings(["all"], info)]
    assert names == [
        "dense:4",
        "dense:8",
        "dense:16",
        "dense:32",
        "dense:64",
        "dense-int8:64",
        "dense-binary:64",
        "maxsim",
        "maxsim-fp16",
        "maxsim-pool:2",
        "maxsim-pool:3",
        "maxsim-binary:100",
        "two-stage:4:100",
        "muvera:100",
    ]
    for spec, message in [
        ("dense:0", "setting 'dense:0': dimensions must be between 1 and 64"),
        ("dense:x", "setting 'dense:x': 'x' is not an integer"),
        (
            "maxsim-pool",
            "setting 'maxsim-pool': give a pool factor of 2 or more, e.g. maxsim-pool:2",
        ),
        ("maxsim:3", "setting 'maxsim:3': too many ':' arguments"),
        ("muvera:0", "setting 'muvera:0': the candidate count must be at least 1"),
        ("colbert", "unknown setting 'colbert'"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse_settings([spec], info)
        assert caught.value.message.startswith(message)
    for late in ("maxsim", "muvera"):
        with pytest.raises(InvalidInput, match="needs multi-vectors"):
            parse_settings([late], tiny_v3.info)
    assert [s.name for s in parse_settings(["all"], tiny_v3.info)][-2:] == [
        "dense-int8:32",
        "dense-binary:32",
    ]


def test_muvera_with_every_candidate_reranked_is_exact_maxsim(tiny_v4: Embedder) -> None:
    report = evaluate_retrieval(tiny_v4, dataset(12), matching(["maxsim", "muvera:12", "muvera:3"]))
    exact, everything, three = report.results
    assert everything.run == exact.run and everything.metrics == exact.metrics
    assert all(len(ranked) == 3 for ranked in three.run.values())  # its candidates only
    assert everything.scanned_bytes == 2560 * 4  # 10 draws x 16 buckets x 16 dimensions, float32


def test_config_errors(tiny_v4: Embedder) -> None:
    with pytest.raises(InvalidInput, match="primary metric 'ndcg@10' is not computed"):
        evaluate_retrieval(tiny_v4, dataset(), EvalConfig(k_values=[1, 5], primary="ndcg@10"))
    with pytest.raises(InvalidInput, match="cut-offs must be positive integers"):
        evaluate_retrieval(tiny_v4, dataset(), EvalConfig(k_values=[0]))


def test_report_files(tiny_v4: Embedder, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "beir", *identity_dataset(8))
    report = evaluate_retrieval(
        tiny_v4, load_dataset(folder), matching(["dense:all", "dense-int8"])
    )
    written = write_report(report, tmp_path / "out", runs=True)
    assert [p.name for p in written[:2]] == [REPORT_JSON, CHART_PNG]
    data = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert data["primary_metric"] == "ndcg@10"
    assert [s["name"] for s in data["settings"]] == [r.name for r in report.results]
    assert data["settings"][0]["metrics"] == report.results[0].metrics
    assert set(data["settings"][0]["query_latency_ms"]) == {"mean", "p50", "p95"}
    assert data["encoding"]["corpus"]["items"] == 8
    assert data["pareto_front"] == pareto_front(
        [(r.name, r.stored_bytes, r.metrics["ndcg@10"]) for r in report.results]
    )
    assert (tmp_path / "out" / CHART_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "runs" / "dense-int8_64.trec").is_file()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
