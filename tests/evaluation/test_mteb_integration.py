"""``mteb.evaluate`` runs uniembed's MTEB model on tasks whose data the tests build (no download,
and a guard fails the test if anything opens a network connection)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.builders import color_image, sentences
from tests.helpers import png_bytes
from uniembed.embedder import Embedder
from uniembed.evaluation.data import RetrievalDataset
from uniembed.evaluation.sweep import EvalConfig, evaluate_retrieval
from uniembed.integrations.mteb import MTEBModel

mteb = pytest.importorskip("mteb")
from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

K = [1, 3, 5, 10]


def metadata(
    name: str, kind: str, main_score: str, category: str = "t2t", modalities: tuple = ("text",)
) -> Any:
    return TaskMetadata(
        name=name,
        description="built by the uniembed tests",
        reference=None,
        dataset={"path": "uniembed-tests/none", "revision": "0"},
        type=kind,
        category=category,
        modalities=list(modalities),
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score=main_score,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


DOCS = sentences(24, seed=21)
QUERIES = [" ".join(text.split()[:2]) for text in DOCS[:8]]  # two words of a document
QRELS = {f"q{i}": {f"d{i}": 1, f"d{i + 8}": 1} for i in range(8)}


class LocalTextRetrieval(AbsTaskRetrieval):
    metadata = metadata("UniembedLocalTextRetrieval", "Retrieval", "ndcg_at_10")

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        split = RetrievalSplitData(
            queries=Dataset.from_dict({"id": [f"q{i}" for i in range(8)], "text": QUERIES}),
            corpus=Dataset.from_dict(
                {"id": [f"d{i}" for i in range(24)], "text": DOCS, "title": [""] * 24}
            ),
            relevant_docs=QRELS,
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class LocalImageRetrieval(AbsTaskRetrieval):
    metadata = metadata(
        "UniembedLocalImageRetrieval", "Any2AnyRetrieval", "ndcg_at_10", "t2i", ("image", "text")
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        split = RetrievalSplitData(
            queries=Dataset.from_dict({"id": [f"q{i}" for i in range(4)], "text": QUERIES[:4]}),
            corpus=Dataset.from_dict(
                {"id": [f"d{i}" for i in range(6)], "image": [color_image(i) for i in range(6)]}
            ),
            relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(4)},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


PAIRS = sentences(10, seed=5)


class LocalSTS(AbsTaskSTS):
    metadata = metadata("UniembedLocalSTS", "STS", "cosine_spearman")
    min_score, max_score = 0, 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = DatasetDict(
            {
                "test": Dataset.from_dict(
                    {"sentence1": PAIRS[:5], "sentence2": PAIRS[5:], "score": [0, 1, 2, 4, 5]}
                )
            }
        )
        self.data_loaded = True


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Offline settings for the hub libraries; any outside connection is refused and recorded."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
        ):
            attempts.append(address)
            raise OSError(f"the test forbids network access ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def run(model: MTEBModel, task: Any) -> dict[str, Any]:
    result = mteb.evaluate(model, [task], cache=None, show_progress_bar=False)
    (task_result,) = result.task_results
    return task_result.scores["test"][0]


def test_mteb_evaluates_the_model_and_agrees_with_uniembed_eval(
    tiny_v4: Embedder, no_network: list
) -> None:
    scores = run(MTEBModel(tiny_v4), LocalTextRetrieval())
    data = RetrievalDataset(
        "local", list(QRELS), QUERIES, [f"d{i}" for i in range(24)], DOCS, QRELS
    )
    ours = (
        evaluate_retrieval(tiny_v4, data, EvalConfig(settings=["dense"], k_values=K))
        .results[0]
        .metrics
    )
    for k in K:
        for metric in ("ndcg", "recall", "map", "mrr"):
            assert ours[f"{metric}@{k}"] == pytest.approx(scores[f"{metric}_at_{k}"], abs=1e-5), (
                metric,
                k,
            )
    assert no_network == []


def test_mteb_image_retrieval_agrees_with_uniembed_eval(
    tiny_v4: Embedder, no_network: list
) -> None:
    scores = run(MTEBModel(tiny_v4), LocalImageRetrieval())
    images = [{"image": png_bytes(color_image(i))} for i in range(6)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(4)}
    data = RetrievalDataset(
        "images", list(qrels), QUERIES[:4], [f"d{i}" for i in range(6)], images, qrels
    )
    ours = (
        evaluate_retrieval(tiny_v4, data, EvalConfig(settings=["dense"], k_values=K))
        .results[0]
        .metrics
    )
    assert ours["ndcg@10"] == pytest.approx(scores["ndcg_at_10"], abs=1e-5)
    assert ours["mrr@3"] == pytest.approx(scores["mrr_at_3"], abs=1e-5)
    assert no_network == []


def test_mteb_sts_uses_text_matching(tiny_v4: Embedder, no_network: list) -> None:
    from scipy.stats import spearmanr

    scores = run(MTEBModel(tiny_v4), LocalSTS())
    first = tiny_v4.encode(PAIRS[:5], "text-matching").embeddings
    second = tiny_v4.encode(PAIRS[5:], "text-matching").embeddings
    cosines = [float(a @ b) for a, b in zip(first, second, strict=True)]
    assert scores["cosine_spearman"] == pytest.approx(
        spearmanr(cosines, [0, 1, 2, 4, 5]).statistic, abs=1e-9
    )
    assert no_network == []


def test_mteb_multivector_model_scores_with_maxsim(tiny_v4: Embedder, no_network: list) -> None:
    scores = run(MTEBModel(tiny_v4, multivector=True), LocalTextRetrieval())
    data = RetrievalDataset(
        "local", list(QRELS), QUERIES, [f"d{i}" for i in range(24)], DOCS, QRELS
    )
    ours = (
        evaluate_retrieval(tiny_v4, data, EvalConfig(settings=["maxsim"], k_values=K))
        .results[0]
        .metrics
    )
    assert ours["ndcg@10"] == pytest.approx(scores["ndcg_at_10"], abs=1e-5)
    assert no_network == []


@pytest.mark.parametrize(
    ("task", "prompt", "expected"),
    [
        ("SciFact", "query", "retrieval.query"),
        ("SciFact", "document", "retrieval.passage"),
        ("STS12", None, "text-matching"),
        ("CodeSearchNetRetrieval", "query", "code.query"),
        ("CodeSearchNetRetrieval", "document", "code.passage"),
        ("VidoreArxivQARetrieval", "document", "retrieval.passage"),
        ("Banking77Classification", None, None),
    ],
)
def test_v4_task_routing(
    tiny_v4: Embedder, task: str, prompt: str | None, expected: str | None
) -> None:
    from mteb.types import PromptType

    prompt_type = PromptType(prompt) if prompt else None
    assert MTEBModel(tiny_v4).task_for(mteb.get_task(task).metadata, prompt_type) == expected


def test_v3_task_routing_and_metadata(tiny_v3: Embedder, tiny_v4: Embedder) -> None:
    from mteb.types import PromptType

    model = MTEBModel(tiny_v3)
    assert (
        model.task_for(mteb.get_task("Banking77Classification").metadata, None) == "classification"
    )
    assert model.task_for(mteb.get_task("SciFact").metadata, PromptType.query) == "retrieval.query"
    assert (
        model.task_for(mteb.get_task("CodeSearchNetRetrieval").metadata, PromptType.document)
        == "retrieval.passage"
    )
    meta = MTEBModel(tiny_v4, multivector=True).mteb_model_meta
    assert meta.name == f"local/{tiny_v4.info.name}" and meta.revision == tiny_v4.weights_digest()
    assert meta.model_type == ["late-interaction"] and meta.embed_dim == 128
    assert sorted(meta.modalities) == ["image", "text"]
