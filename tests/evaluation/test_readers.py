"""Every dataset format loads into the same RetrievalDataset; bad input names the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.builders import (
    color_image,
    pdf_file,
    write_beir,
    write_jsonl,
    write_vidore,
)
from tests.helpers import png_bytes
from uniembed.errors import InvalidInput
from uniembed.evaluation.data import PdfPage, encode_input, fingerprint
from uniembed.evaluation.readers import load_dataset


def small_beir(folder: Path) -> Path:
    docs = {"d1": "solar panels turn light into power", "d2": "wind farms", "7": "tides"}
    queries = {"q1": "how do solar panels work", "q2": "wind", "q3": "no judgement here"}
    qrels = {"q1": {"d1": 2, "7": 0}, "q2": {"d2": 1}}
    return write_beir(folder, docs, queries, qrels, titles={"d1": "Solar"})


def test_beir_loads_with_titles_and_judged_queries_only(tmp_path: Path) -> None:
    data = load_dataset(small_beir(tmp_path / "beir"))
    assert data.corpus_ids == ["d1", "d2", "7"]
    assert data.corpus[0] == "Solar solar panels turn light into power"  # title + " " + text
    assert data.corpus[1] == "wind farms"
    assert data.query_ids == ["q1", "q2"] and data.skipped_queries == 1
    assert data.qrels == {"q1": {"d1": 2, "7": 0}, "q2": {"d2": 1}}
    assert data.details == {"format": "beir", "split": "test"}


def test_beir_numeric_ids_become_strings(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    write_jsonl(folder / "corpus.jsonl", [{"_id": 1, "text": "a"}, {"_id": 2, "text": "b"}])
    write_jsonl(folder / "queries.jsonl", [{"_id": 10, "text": "q"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n10\t2\t1\n")
    data = load_dataset(folder)
    assert data.corpus_ids == ["1", "2"] and data.qrels == {"10": {"2": 1}}


@pytest.mark.parametrize("how", ["save_to_disk", "parquet", "hub-parquet"])
def test_vidore_configs_load_from_save_to_disk_and_parquet(tmp_path: Path, how: str) -> None:
    data = load_dataset(write_vidore(tmp_path / "vidore", how, images=4))
    assert data.corpus_ids == ["0", "1", "2", "3"]
    assert data.query_ids == ["0", "1", "2", "3"]
    assert data.qrels["2"] == {"2": 1}
    image = data.corpus[1]
    assert isinstance(image, dict) and isinstance(image["image"], bytes)
    assert image["image"] == png_bytes(color_image(1))  # the stored PNG, untouched
    assert [item["image"] for item in data.corpus] == [data.corpus[i]["image"] for i in range(4)]
    assert len(data.corpus[1:3]) == 2


def test_jsonl_with_text_image_and_pdf_pages(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    color_image(3).save(folder / "img.png")
    pdf_file(folder / "docs" / "report.pdf", pages=3)
    write_jsonl(
        folder / "corpus.jsonl",
        [
            {"id": "t", "text": "plain text", "title": "T"},
            {"id": "i", "image": "img.png"},
            {"id": "r", "pdf": "docs/report.pdf"},
        ],
    )
    write_jsonl(
        folder / "queries.jsonl",
        [
            {"id": "q1", "text": "page two", "relevant": ["r#p2"]},
            {"id": "q2", "image": "img.png", "relevant": {"i": 2, "t": 1}},
            {"id": "q3", "text": "unjudged"},
        ],
    )
    data = load_dataset(folder)
    assert data.corpus_ids == ["t", "i", "r#p1", "r#p2", "r#p3"]
    assert data.corpus[0] == "T plain text"
    assert data.corpus[1] == {"image": str(folder / "img.png")}
    assert data.corpus[3] == PdfPage(folder / "docs" / "report.pdf", 2)
    assert data.qrels == {"q1": {"r#p2": 1}, "q2": {"i": 2, "t": 1}}
    assert data.skipped_queries == 1
    pixel = encode_input(data.corpus[3]).getpixel((10, 10))  # page 2, rendered (PIL's PDF is JPEG)
    assert max(abs(a - b) for a, b in zip(pixel, color_image(101).getpixel((0, 0)))) <= 3


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    first = load_dataset(folder)
    again = load_dataset(folder)
    assert fingerprint(first.corpus_ids, first.corpus) == fingerprint(
        again.corpus_ids, again.corpus
    )
    lines = (folder / "corpus.jsonl").read_text().replace("wind farms", "wind farm")
    (folder / "corpus.jsonl").write_text(lines)
    changed = load_dataset(folder)
    assert fingerprint(first.corpus_ids, first.corpus) != fingerprint(
        changed.corpus_ids, changed.corpus
    )


# --------------------------------------------------------------------- errors
def error_of(source: Path | str, split: str = "test") -> str:
    with pytest.raises(InvalidInput) as caught:
        load_dataset(source, split)
    return caught.value.message


def test_missing_qrels_split_lists_the_splits_found(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    message = error_of(folder, "dev")
    assert message == f"{folder / 'qrels' / 'dev.tsv'}: no qrels for split 'dev' (found: test)"


def test_qrels_id_absent_from_corpus_names_file_and_line(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    with (folder / "qrels" / "test.tsv").open("a") as file:
        file.write("q2\tmissing-doc\t1\n")
    assert (
        error_of(folder)
        == f"{folder / 'qrels' / 'test.tsv'}:5: corpus id 'missing-doc' is not in the corpus"
    )


def test_qrels_unknown_query_and_bad_score(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    assert error_of(folder) == f"{qrels}:2: query id 'q9' is not among the queries"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    assert error_of(folder) == f"{qrels}:2: score must be an integer, got 'high'"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    assert error_of(folder) == f"{qrels}:2: expected 3 tab-separated fields, got 1"


def test_qrels_without_header_or_judgements(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text("q1\td1\t1\n")
    assert error_of(folder).startswith(
        f"{qrels}:1: expected the header line 'query-id<TAB>corpus-id<TAB>score'"
    )
    qrels.write_text("query-id\tcorpus-id\tscore\n")
    assert error_of(folder) == f"{qrels}: no relevance judgements"


def test_empty_corpus_and_malformed_lines(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "beir")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("\n")
    assert error_of(folder) == f"the corpus ({corpus}) is empty"
    corpus.write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    assert error_of(folder).startswith(f"{corpus}:2: not valid JSON")
    corpus.write_text('{"_id": "d1", "text": "ok"}\n["d2"]\n')
    assert error_of(folder) == f"{corpus}:2: expected a JSON object, got list"
    corpus.write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d1", "text": "again"}\n')
    assert (
        error_of(folder)
        == f"{corpus}:2: corpus ({corpus}) id 'd1' appears twice (first at {corpus}:1)"
    )
    corpus.write_text('{"_id": "d1"}\n')
    assert error_of(folder) == f"{corpus}:1: 'text' must be a string, got None"


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    pdf_file(folder / "a.pdf", pages=2)
    write_jsonl(
        folder / "corpus.jsonl", [{"id": "a", "pdf": "a.pdf"}, {"id": "b", "image": "gone.png"}]
    )
    write_jsonl(folder / "queries.jsonl", [{"id": "q", "text": "x", "relevant": ["a"]}])
    corpus, queries = folder / "corpus.jsonl", folder / "queries.jsonl"
    assert error_of(folder) == f"{corpus}:2: image file {folder / 'gone.png'} does not exist"
    write_jsonl(corpus, [{"id": "a", "pdf": "a.pdf"}, {"id": "b", "text": "t", "image": "x"}])
    assert (
        error_of(folder)
        == f"{corpus}:2: give exactly one of 'text', 'image', 'pdf' (found: text, image)"
    )
    write_jsonl(corpus, [{"id": "a", "pdf": "a.pdf"}])
    assert (
        error_of(folder) == f"{queries}:1: corpus id 'a' is not in the corpus "
        "(it is a PDF: name its pages, e.g. 'a#p1')"
    )
    (folder / "bad.pdf").write_bytes(b"%PDF-1.4 not really")
    write_jsonl(corpus, [{"id": "a", "pdf": "bad.pdf"}])
    assert error_of(folder) == f"{corpus}:1: not a valid PDF (corrupt, truncated, or without pages)"


def test_vidore_errors_name_the_row(tmp_path: Path) -> None:
    import datasets

    folder = write_vidore(tmp_path / "vidore", "parquet", images=3)
    datasets.Dataset.from_dict(
        {"query-id": [0, 1], "corpus-id": [0, 9], "score": [1, 1]}
    ).to_parquet(str(folder / "qrels.parquet"))
    assert error_of(folder) == "qrels row 1: corpus id '9' is not in the corpus"
    (folder / "qrels.parquet").unlink()
    assert "not a dataset folder" in error_of(folder)


def test_hub_id_offline_fails_fast_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_of("vidore/some-dataset")
    assert message.startswith(
        "dataset 'vidore/some-dataset' is not a local folder "
        "and the Hugging Face hub cannot be reached"
    )
    assert "save_to_disk" in message
    assert error_of("no/such/path").startswith("dataset 'no/such/path': no such folder")


def test_file_instead_of_folder(tmp_path: Path) -> None:
    file = tmp_path / "x.json"
    file.write_text(json.dumps({}))
    assert error_of(file) == f"{file}: expected a dataset folder, got a file"
