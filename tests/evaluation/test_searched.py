"""``search:MODE`` settings: evaluation through a real index, equal to what ``Index.search`` returns
for the same texts, and to the in-memory study of the same representation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.evaluation.builders import identity_dataset
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.data import RetrievalDataset
from uniembed.evaluation.encoded import Encodings
from uniembed.evaluation.searched import IndexModel
from uniembed.evaluation.specs import parse_settings
from uniembed.evaluation.sweep import EvalConfig, evaluate_retrieval
from uniembed.retrieval.index import Index

MODES = ["dense", "multivector", "two-stage:5", "muvera:5", "binary:5"]


@pytest.fixture(scope="module")
def identity() -> RetrievalDataset:
    docs, queries, qrels = identity_dataset(12)
    return RetrievalDataset(
        "identity", list(queries), list(queries.values()), list(docs), list(docs.values()), qrels
    )


def config(settings: list[str]) -> EvalConfig:
    return EvalConfig(settings=settings, k_values=[1, 10])


def test_a_search_setting_ranks_as_the_index_searches(
    tiny_v4: Embedder, identity: RetrievalDataset, tmp_path: Path
) -> None:
    """The same texts added with Index.add and searched with Index.search (the model runs there)
    give the ranking and scores the evaluation measured for each mode."""
    report = evaluate_retrieval(tiny_v4, identity, config([f"search:{m}" for m in MODES]))
    index = Index.create(tmp_path / "index", tiny_v4, muvera=True)
    index.add(list(identity.corpus), identity.corpus_ids)
    for result, spec in zip(report.results, MODES, strict=True):
        mode, _, candidates = spec.partition(":")
        assert result.name == f"search:{spec}"
        for query_id, text in zip(identity.query_ids, identity.queries, strict=True):
            hits = index.search(
                text, k=10, mode=mode, candidates=int(candidates) if candidates else None
            )
            measured = list(result.run[query_id].items())
            assert [hit.id for hit in hits] == [doc for doc, _ in measured], (spec, query_id)
            for hit, (_, score) in zip(hits, measured, strict=True):
                assert hit.score == pytest.approx(score, abs=1e-4)
    index.close()


def test_search_multivector_equals_the_float16_study(
    tiny_v4: Embedder, identity: RetrievalDataset
) -> None:
    report = evaluate_retrieval(tiny_v4, identity, config(["search:multivector", "maxsim-fp16"]))
    searched, study = (result.run for result in report.results)
    for query_id in identity.query_ids:
        assert list(searched[query_id]) == list(study[query_id])
        for doc, score in study[query_id].items():
            assert searched[query_id][doc] == pytest.approx(score, abs=1e-4)
    assert report.results[0].metrics == report.results[1].metrics


def test_a_codec_setting_measures_the_index_with_that_codec(
    tiny_v4: Embedder, identity: RetrievalDataset, tmp_path: Path
) -> None:
    report = evaluate_retrieval(tiny_v4, identity, config(["search:multivector@binary"]))
    index = Index.create(tmp_path / "index", tiny_v4, codecs=["binary"])
    index.add(list(identity.corpus), identity.corpus_ids)
    run = report.results[0].run
    for query_id, text in zip(identity.query_ids, identity.queries, strict=True):
        hits = index.search(text, k=10, mode="multivector")
        assert [hit.id for hit in hits] == list(run[query_id])
    index.close()


def test_search_settings_leave_no_index_behind(
    tiny_v4: Embedder, identity: RetrievalDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary index goes
    result = tiny_v4.encode(list(identity.corpus), task="retrieval.passage", output="both")
    corpus = Encodings.from_vectors(result.embeddings, result.multivectors, result.token_counts)
    model = IndexModel(tiny_v4, "retrieval.query", "retrieval.passage")
    (setting,) = parse_settings(["search:binary:3"], tiny_v4.info, model)
    index = setting.build(corpus)
    assert [p.name.startswith("uniembed-eval-") for p in tmp_path.iterdir()] == [True]
    index.close()
    assert list(tmp_path.iterdir()) == []
    evaluate_retrieval(tiny_v4, identity, config(["search:binary:3"]))
    assert list(tmp_path.iterdir()) == []


def test_search_spec_errors(tiny_v4: Embedder, tiny_v3: Embedder) -> None:
    model = IndexModel(tiny_v4, "retrieval.query", "retrieval.passage")
    names = [
        s.name for s in parse_settings(["search:two-stage", "search:dense"], tiny_v4.info, model)
    ]
    assert names == ["search:two-stage:100", "search:dense"]
    (binary,) = parse_settings(["search:multivector@binary"], tiny_v4.info, model)
    assert (binary.name, binary.codecs) == ("search:multivector@binary", ("binary",))
    (two,) = parse_settings(["search:binary:7@float16"], tiny_v4.info, model)
    assert (two.name, two.candidates, two.codecs) == ("search:binary:7", 7, ("float16", "binary"))
    for spec, message in [
        ("search:multivector@zip", "@CODEC follows a late mode"),
        ("search:dense@binary", "@CODEC follows a late mode"),
        ("search", "give search:MODE"),
        ("search:exact", "give search:MODE"),
        ("search:dense:5", "too many ':' arguments"),
        ("search:binary:0", "at least 1"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            parse_settings([spec], tiny_v4.info, model)
    with pytest.raises(InvalidInput, match="needs the model itself"):
        parse_settings(["search:dense"], tiny_v4.info)
    v3 = IndexModel(tiny_v3, "retrieval.query", "retrieval.passage")
    with pytest.raises(InvalidInput, match="needs multi-vectors"):
        parse_settings(["search:multivector"], tiny_v3.info, v3)
    assert [s.name for s in parse_settings(["search:dense"], tiny_v3.info, v3)] == ["search:dense"]
