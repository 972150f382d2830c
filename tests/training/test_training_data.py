"""Reading training and evaluation data: every form, and a clear error naming the file and line
(or row) for every kind of bad data — before any training step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from uniembed.errors import InvalidInput
from uniembed.training.data import (
    GradedEval,
    GradedExample,
    RetrievalEval,
    read_eval_data,
    read_training_data,
)


def jsonl(path: Path, records: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
        encoding="utf-8",
    )
    return path


PAIRS = [
    {"query": "q one", "positive": "p one", "negatives": ["n1", {"text": "n2"}]},
    {"query": {"text": "q two"}, "positive": "p two", "negatives": ["n3", "n4"]},
]


def test_pairs_from_jsonl_parquet_and_a_datasets_folder_are_the_same(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from_jsonl = read_training_data(jsonl(tmp_path / "d.jsonl", PAIRS))
    pq.write_table(
        pa.Table.from_pylist(from_jsonl_records()), tmp_path / "d.parquet"
    )  # Arrow: one type per column
    from_parquet = read_training_data(tmp_path / "d.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(from_jsonl_records())}).save_to_disk(
        tmp_path / "ds"
    )
    from_folder = read_training_data(tmp_path / "ds")
    for data in (from_jsonl, from_parquet, from_folder):
        assert data.kind == "pairs" and len(data) == 2
        assert [(e.query, e.positive, e.negatives) for e in data.examples] == [
            ("q one", "p one", ("n1", "n2")),
            ("q two", "p two", ("n3", "n4")),
        ]
    assert from_jsonl.examples[1].where == f"{tmp_path / 'd.jsonl'}:2"
    assert from_parquet.examples[1].where == f"{tmp_path / 'd.parquet'} row 2"
    assert from_folder.examples[0].where.endswith("[train] row 1")


def from_jsonl_records() -> list[dict]:
    return [
        {"query": "q one", "positive": "p one", "negatives": ["n1", "n2"]},
        {"query": "q two", "positive": "p two", "negatives": ["n3", "n4"]},
    ]


def test_graded_pairs_and_images_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    data = read_training_data(
        jsonl(
            tmp_path / "g.jsonl",
            [
                {"sentence1": "a", "sentence2": {"image": "img/a.png"}, "score": 4},
                {"sentence1": "b", "sentence2": "c", "score": 0.5},
            ],
        )
    )
    assert data.kind == "graded" and data.has_images
    first = data.examples[0]
    assert isinstance(first, GradedExample) and first.second == {
        "image": str(tmp_path / "img" / "a.png")
    }
    assert first.score == 4.0


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"query": "q"}], r"g\.jsonl:1: missing field 'positive'"),
        (
            [{"query": "q", "positive": "p"}, {"positive": "p"}],
            r"g\.jsonl:2: missing field 'query'",
        ),
        ([{"query": "q", "positive": ""}], r"g\.jsonl:1: positive is an empty text"),
        (
            [{"query": "q", "positive": 3}],
            r"g\.jsonl:1: positive must be a text or \{\"image\": path\}, got int",
        ),
        (
            [{"query": "q", "positive": {"image": "nope.png"}}],
            r"g\.jsonl:1: positive: image file not found: .*nope\.png",
        ),
        (
            [{"query": "q", "positive": "p", "negatives": "n"}],
            r"g\.jsonl:1: negatives must be a list",
        ),
        (
            [{"query": "q", "positive": "p", "negatives": [{"image": "x.png"}]}],
            r"g\.jsonl:1: negatives\[0\]: image file not found",
        ),
        ([{"title": "t"}], r"g\.jsonl:1: expected the fields query, positive .* got 'title'"),
        (["[1, 2]"], r"g\.jsonl:1: expected an object"),
        (['{"query": "q", '], r"g\.jsonl:1: not valid JSON"),
        ([{"sentence1": "a", "sentence2": "b"}], r"g\.jsonl:1: missing field 'score'"),
        (
            [{"sentence1": "a", "sentence2": "b", "score": "high"}],
            r"g\.jsonl:1: score must be a finite number",
        ),
        (
            [{"sentence1": "a", "sentence2": "b", "score": float("nan")}],
            r"g\.jsonl:1: score must be a finite number",
        ),
        (
            [{"query": "q", "positive": "p"}, {"sentence1": "a", "sentence2": "b", "score": 1}],
            r"g\.jsonl:2: a graded record in a file of pairs",
        ),
        (
            [{"query": "q", "positive": "p", "negatives": ["n"]}, {"query": "q", "positive": "p"}],
            r"g\.jsonl:2: 0 negatives, but .*g\.jsonl:1 has 1",
        ),
        ([], r"g\.jsonl: no examples"),
        ([""], r"g\.jsonl: no examples"),
    ],
)
def test_bad_data_names_the_file_and_line(tmp_path: Path, records: list, message: str) -> None:
    path = jsonl(tmp_path / "g.jsonl", records) if records else (tmp_path / "g.jsonl")
    if not records:
        path.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        read_training_data(path)


def test_a_fixed_number_of_negatives_takes_the_first_ones(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "d.jsonl",
        [
            {"query": "q", "positive": "p", "negatives": ["a", "b", "c"]},
            {"query": "r", "positive": "s", "negatives": ["d"]},
        ],
    )
    data = read_training_data(path, negatives=1)
    assert [e.negatives for e in data.examples] == [("a",), ("d",)]
    with pytest.raises(InvalidInput, match=r"d\.jsonl:2: 1 negatives, fewer than the 2 asked for"):
        read_training_data(path, negatives=2)


def test_missing_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such data file"):
        read_training_data(tmp_path / "absent.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidInput, match="not one written by datasets"):
        read_training_data(tmp_path / "folder")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInput, match=r"broken\.parquet: unreadable Parquet"):
        read_training_data(tmp_path / "broken.parquet")


def test_eval_pairs_become_queries_a_corpus_and_judgements(tmp_path: Path) -> None:
    data = read_eval_data(
        jsonl(
            tmp_path / "e.jsonl",
            [
                {"query": "q1", "positive": "shared", "negatives": ["n1"]},
                {
                    "query": "q2",
                    "positive": "p2",
                    "negatives": ["shared", "n2", "n3"],
                },  # any number of negatives
            ],
        )
    )
    assert isinstance(data, RetrievalEval)
    assert sorted(data.corpus.values()) == ["n1", "n2", "n3", "p2", "shared"]
    by_text = {text: doc for doc, text in data.corpus.items()}
    assert data.qrels == {"q0": {by_text["shared"]: 1}, "q1": {by_text["p2"]: 1}}


def test_eval_graded_pairs(tmp_path: Path) -> None:
    data = read_eval_data(
        jsonl(tmp_path / "e.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 1}])
    )
    assert isinstance(data, GradedEval) and data.scores == [1.0]


def test_beir_folder_and_its_errors(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    jsonl(
        folder / "corpus.jsonl",
        [{"_id": "d1", "title": "T", "text": "body"}, {"_id": 2, "text": "two"}],
    )
    jsonl(
        folder / "queries.jsonl",
        [{"_id": "q1", "text": "question"}, {"_id": "q2", "text": "unjudged"}],
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t2\t0\n", encoding="utf-8"
    )
    data = read_eval_data(folder)
    assert isinstance(data, RetrievalEval)
    assert data.corpus == {"d1": "T body", "2": "two"} and data.queries == {"q1": "question"}
    assert data.qrels == {"q1": {"d1": 2, "2": 0}}
    with pytest.raises(InvalidInput, match=r"qrels/dev\.tsv"):
        read_eval_data(folder, split="dev")
    (folder / "qrels" / "test.tsv").write_text("h\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"test\.tsv:1: expected the header line"):
        read_eval_data(folder)  # BEIR's reader skips line 1: a file without the header loses a row
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tmissing\t1\n", encoding="utf-8"
    )
    with pytest.raises(
        InvalidInput, match=r"test\.tsv:2: corpus id 'missing' is not in the corpus"
    ):
        read_eval_data(folder)
