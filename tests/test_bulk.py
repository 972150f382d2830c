"""Bulk jobs: every input kind and output format equals direct ``Embedder.encode``; resume never
re-encodes or duplicates; bad items go to the errors file."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from tests.helpers import pdf_bytes, png_bytes, read_output
from uniembed.bulk import (
    BulkOptions,
    ReadOptions,
    count_items,
    count_records,
    embed_files,
    infer_format,
    iter_records,
)
from uniembed.cli.embed import make_embed_command
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.models.base import Row, RowOutput
from uniembed.testing.fake import FakeModel

FORMATS = {"jsonl": "out.jsonl", "parquet": "out.parquet", "numpy": "out.npy"}


class CountingModel(FakeModel):
    """FakeModel that counts rows and can fail (like a crash or Ctrl-C) on its N-th forward call."""

    def __init__(self, fail_on_call: int | None = None, exc: BaseException | None = None) -> None:
        super().__init__()
        self.fail_on_call = fail_on_call
        self.exc = exc or KeyboardInterrupt()

    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        if self.fail_on_call is not None and len(self.forward_calls) + 1 == self.fail_on_call:
            raise self.exc
        return super().forward(batch)

    @property
    def rows(self) -> int:
        return sum(self.forward_calls)


@pytest.fixture
def embedder() -> Embedder:
    return Embedder(CountingModel())


def expected(inputs: list[Any], **kwargs: Any) -> list[np.ndarray]:
    result = Embedder(FakeModel()).encode(inputs, **kwargs)
    return [e.numpy() for e in result.embeddings]


def assert_vectors(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


TEXTS = [f"document number {i} about topic {i % 3}" for i in range(7)]


# ----------------------------------------------------------------- inputs × formats
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_text_lines_match_direct_encode_in_every_format(
    tmp_path: Path, embedder: Embedder, fmt: str
) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    output = tmp_path / FORMATS[fmt]
    options = BulkOptions(task="retrieval.passage", dimensions=16, batch_size=3)
    report = embed_files([source], output, embedder, options)
    ids, vectors = read_output(output)
    assert ids == [f"{source.as_posix()}:{n}" for n in range(1, 8)]
    assert_vectors(vectors, expected(TEXTS, task="retrieval.passage", dimensions=16))
    assert (report.embedded, report.failed, report.skipped, report.finished) == (7, 0, 0, True)
    assert report.tokens == sum(
        len("Passage: " + t) + 2 for t in TEXTS
    )  # FakeModel: chars + BOS/EOS
    assert not (tmp_path / f"{output.name}.parts").exists()


def test_whole_files_in_a_folder_get_relative_ids(tmp_path: Path, embedder: Embedder) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first line\nsecond line\n")
    (folder / "sub" / "b.md").write_text("another note")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    embed_files([folder], tmp_path / "out.jsonl", embedder, read=ReadOptions(whole_file=True))
    ids, vectors = read_output(tmp_path / "out.jsonl")
    assert ids == ["a.txt", "sub/b.md"]
    assert_vectors(vectors, expected(["first line\nsecond line\n", "another note"]))


def test_jsonl_with_custom_keys_and_image_paths(tmp_path: Path, embedder: Embedder) -> None:
    (tmp_path / "red.png").write_bytes(png_bytes((255, 0, 0)))
    rows = [
        {"doc": 7, "body": "hello world"},
        {"doc": "b", "image": "red.png"},
        {"doc": "c", "body": "bye"},
    ]
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    options = BulkOptions(task="retrieval.passage")
    embed_files(
        [source],
        tmp_path / "out.parquet",
        embedder,
        options,
        read=ReadOptions(id_key="doc", text_key="body"),
    )
    ids, vectors = read_output(tmp_path / "out.parquet")
    assert ids == ["7", "b", "c"]
    want = expected(
        ["hello world", {"image": png_bytes((255, 0, 0))}, "bye"], task="retrieval.passage"
    )
    assert_vectors(vectors, want)


def test_folder_of_images_and_pdfs_yields_one_record_per_page(
    tmp_path: Path, embedder: Embedder
) -> None:
    folder = tmp_path / "scans"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "blue.png").write_bytes(png_bytes((0, 0, 255)))
    pdf = pdf_bytes([(10, 200, 10), (200, 10, 10)], (40, 30))
    (folder / "report.pdf").write_bytes(pdf)
    embed_files([folder], tmp_path / "out.npy", embedder, BulkOptions(batch_size=1))
    ids, vectors = read_output(tmp_path / "out.npy")
    assert ids == ["deep/blue.png", "report.pdf#page=1", "report.pdf#page=2"]
    assert_vectors(vectors, expected([{"image": png_bytes((0, 0, 255))}, {"pdf": pdf}]))
    assert count_records([folder]) == 2  # records, before PDFs expand into pages


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_multivectors_keep_one_matrix_per_item(
    tmp_path: Path, embedder: Embedder, fmt: str
) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:3])
    output = tmp_path / FORMATS[fmt]
    embed_files([source], output, embedder, BulkOptions(vectors="multi", batch_size=2))
    ids, vectors = read_output(output)
    assert len(ids) == 3
    want = expected(TEXTS[:3], multivector=True)
    if fmt == "parquet":  # Parquet holds float16 rows (what an index stores): the exact rounding
        want = [w.astype(np.float16).astype(np.float32) for w in want]
    assert_vectors(vectors, want)
    assert vectors[0].shape == (len("Query: " + TEXTS[0]) + 2, 8)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_vectors_both_come_from_one_forward_with_what_an_index_stores(
    tmp_path: Path, fmt: str
) -> None:
    (tmp_path / "red.png").write_bytes(png_bytes((255, 0, 0)))
    pdf = pdf_bytes([(10, 200, 10), (200, 10, 10)], (40, 30))
    (tmp_path / "report.pdf").write_bytes(pdf)
    rows = [
        {"id": "t", "text": "hello world", "metadata": {"lang": "en"}},
        {"id": "img", "image": "red.png"},
        {"id": "rep", "pdf": "report.pdf", "metadata": {"year": 2024}},
    ]
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    output = tmp_path / FORMATS[fmt]
    model = CountingModel()
    options = BulkOptions(task="retrieval.passage", dimensions=16, vectors="both")
    embed_files([source], output, Embedder(model), options)
    if fmt == "jsonl":
        got = [json.loads(line) for line in output.read_text().splitlines()]
    else:
        table = pq.read_table(output)
        assert json.loads(table.schema.metadata[b"uniembed"])["vectors"] == "both"
        got = table.to_pylist()
        for row in got:
            row["metadata"] = json.loads(row["metadata"])
    inputs = ["hello world", {"image": png_bytes((255, 0, 0))}, {"pdf": pdf}]
    want = Embedder(FakeModel()).encode(
        inputs, task="retrieval.passage", dimensions=16, output="both"
    )
    assert model.rows == 4  # one forward row per entry: both outputs from it
    assert [r["id"] for r in got] == ["t", "img", "rep#page=1", "rep#page=2"]
    assert [(r["document"], r["page"], r["kind"]) for r in got] == [
        ("t", None, "text"),
        ("img", None, "image"),
        ("rep", 1, "page"),
        ("rep", 2, "page"),
    ]
    assert [r["metadata"] for r in got] == [{"lang": "en"}, {}, {"year": 2024}, {"year": 2024}]
    assert [r["text"] for r in got] == ["hello world", None, None, None]
    grids = [None if g is None else [g.start, g.height, g.width] for g in want.patch_grids]
    assert [r["grid"] for r in got] == grids and grids[1] is not None
    assert_vectors([np.asarray(r["embedding"], np.float32) for r in got], want.embeddings)
    multi = [m.numpy() for m in want.multivectors]
    if fmt == "jsonl":
        assert_vectors([np.asarray(r["embeddings"], np.float32) for r in got], multi)
    else:  # float16 rows as bytes, `tokens` of them: the exact float16 rounding of the forward
        assert table.schema.field("embeddings").type == pa.large_binary()
        columns = pq.ParquetFile(output).metadata.row_group(0).to_dict()["columns"]
        plain = {c["path_in_schema"]: c for c in columns if c["path_in_schema"] == "embeddings"}
        assert plain["embeddings"]["compression"] == "UNCOMPRESSED"  # vectors: read as they lie
        assert plain["embeddings"]["statistics"] is None
        assert not any("DICTIONARY" in e for e in plain["embeddings"]["encodings"])
        assert [r["tokens"] for r in got] == [len(m) for m in multi]
        decoded = [np.frombuffer(r["embeddings"], "<f2").reshape(r["tokens"], -1) for r in got]
        assert_vectors([d.astype(np.float32) for d in decoded],
                       [m.astype(np.float16).astype(np.float32) for m in multi])  # fmt: skip


def test_metadata_that_is_not_an_object_is_an_item_error(
    tmp_path: Path, embedder: Embedder
) -> None:
    source = write_lines(
        tmp_path / "in.jsonl", [json.dumps({"id": "a", "text": "x", "metadata": 3})]
    )
    report = embed_files([source], tmp_path / "o.jsonl", embedder, BulkOptions(vectors="both"))
    assert report.failed == 1
    error = json.loads((tmp_path / "o.jsonl.errors.jsonl").read_text())
    assert error == {"id": "a", "error": "'metadata' must be a JSON object"}


def test_count_records_matches_iteration(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.txt", ["x", "", "y"])
    write_lines(tmp_path / "b.jsonl", ['{"id": 1, "text": "t"}', "", '{"id": 2, "text": "u"}'])
    for read in (ReadOptions(), ReadOptions(whole_file=True)):
        assert count_records([tmp_path], read) == len(list(iter_records([tmp_path], read)))


# ----------------------------------------------------------------- resume
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_resume_after_interruption_finishes_without_re_encoding(tmp_path: Path, fmt: str) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    output = tmp_path / FORMATS[fmt]
    options = BulkOptions(batch_size=2)
    crashing = CountingModel(fail_on_call=3)  # 2 chunks (4 items) finish, the 3rd is interrupted
    with pytest.raises(KeyboardInterrupt):
        embed_files([source], output, Embedder(crashing), options)
    assert crashing.rows == 4
    if fmt == "jsonl":
        assert len(read_output(output)[0]) == 4  # partial output is valid
    resumed = CountingModel()
    report = embed_files([source], output, Embedder(resumed), options, resume=True)
    assert resumed.rows == 3  # only the 3 unfinished items were encoded
    assert (report.skipped, report.embedded) == (4, 3)
    ids, vectors = read_output(output)
    assert ids == [f"{source.as_posix()}:{n}" for n in range(1, 8)]
    assert_vectors(vectors, expected(TEXTS))


@pytest.mark.parametrize("fmt", ["parquet", "numpy"])
def test_resume_after_a_crash_of_the_model(tmp_path: Path, fmt: str) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    output = tmp_path / FORMATS[fmt]
    crashing = CountingModel(fail_on_call=2, exc=RuntimeError("CUDA out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        embed_files([source], output, Embedder(crashing), BulkOptions(batch_size=3))
    assert not output.exists() and (tmp_path / f"{output.name}.parts").is_dir()
    resumed = CountingModel()
    embed_files([source], output, Embedder(resumed), BulkOptions(batch_size=3), resume=True)
    assert resumed.rows == 4
    assert_vectors(read_output(output)[1], expected(TEXTS))


def test_resume_drops_a_torn_last_jsonl_line(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:3])
    output = tmp_path / "out.jsonl"
    embed_files([source], output, embedder)
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + lines[1] + lines[2][:25])  # a crash in the middle of a write
    resumed = CountingModel()
    embed_files([source], output, Embedder(resumed), resume=True)
    assert resumed.rows == 1
    ids, vectors = read_output(output)
    assert ids == [f"{source.as_posix()}:{n}" for n in (1, 2, 3)]
    assert_vectors(vectors, expected(TEXTS[:3]))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_resume_of_a_finished_job_adds_only_new_items(
    tmp_path: Path, embedder: Embedder, fmt: str
) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:4])
    output = tmp_path / FORMATS[fmt]
    embed_files([source], output, embedder)
    write_lines(source, TEXTS)
    resumed = CountingModel()
    embed_files([source], output, Embedder(resumed), resume=True)
    assert resumed.rows == 3
    ids, vectors = read_output(output)
    assert ids == [f"{source.as_posix()}:{n}" for n in range(1, 8)]
    assert_vectors(vectors, expected(TEXTS))


def test_a_finished_numpy_output_reopened_for_resume_is_split_into_parts(tmp_path: Path) -> None:
    from uniembed.bulk.outputs import ADOPTED_ROWS_PER_PART, PartsWriter

    output, rows = tmp_path / "out.npy", ADOPTED_ROWS_PER_PART + 5
    vectors = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    np.save(output, vectors)
    (tmp_path / "out.ids.json").write_text(json.dumps([f"id{i}" for i in range(rows)]))
    writer = PartsWriter(output, "numpy", {"format": "numpy", "vectors": "single"})
    assert len(writer.done_ids()) == rows and not output.exists()
    assert len(list((tmp_path / "out.npy.parts").glob("part-*.npz"))) == 2
    writer.finish()
    ids, merged = read_output(output)
    assert ids == [f"id{i}" for i in range(rows)]
    assert np.array_equal(np.stack(merged), vectors)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".npy"])
def test_resume_refuses_different_options(tmp_path: Path, embedder: Embedder, suffix: str) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    output = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        embed_files(
            [source], output, Embedder(CountingModel(fail_on_call=2)), BulkOptions(batch_size=2)
        )
    with pytest.raises(InvalidInput, match=r"dimensions: None before, 8 now"):
        embed_files([source], output, embedder, BulkOptions(dimensions=8), resume=True)
    with pytest.raises(InvalidInput, match=r"task: None before, 'text-matching' now"):
        embed_files([source], output, embedder, BulkOptions(task="text-matching"), resume=True)
    report = embed_files([source], output, embedder, resume=True)  # the same options resume
    assert report.embedded == len(TEXTS) - 2


def test_resume_refuses_a_jsonl_file_it_did_not_write(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    output = write_lines(tmp_path / "out.jsonl", ['{"no_id": 1}'])
    with pytest.raises(InvalidInput, match="line 1 is not a record this tool wrote"):
        embed_files([source], output, embedder, resume=True)


def test_numpy_parts_of_different_sizes_are_refused(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:2])
    output = tmp_path / "out.npy"
    with pytest.raises(KeyboardInterrupt):
        embed_files(
            [source], output, Embedder(CountingModel(fail_on_call=2)), BulkOptions(batch_size=1)
        )
    with (tmp_path / "out.npy.parts" / "part-000001.npz").open("wb") as part:
        np.savez(
            part, ids=np.array([f"{source.as_posix()}:2"]), vectors=np.zeros((1, 5), np.float32)
        )
    with pytest.raises(InvalidInput, match=r"different vector sizes \[5, 32\]"):
        embed_files([source], output, embedder, BulkOptions(batch_size=1), resume=True)


def test_existing_output_needs_resume_or_overwrite(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:2])
    output = tmp_path / "out.npy"
    embed_files([source], output, embedder)
    with pytest.raises(InvalidInput, match="pass --resume .* or --overwrite"):
        embed_files([source], output, embedder)
    write_lines(source, TEXTS[2:4])
    embed_files([source], output, embedder, overwrite=True)
    assert_vectors(read_output(output)[1], expected(TEXTS[2:4]))


# ----------------------------------------------------------------- bad items
def test_bad_items_go_to_the_errors_file_and_the_job_goes_on(
    tmp_path: Path, embedder: Embedder
) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    rows = [
        {"id": "ok1", "text": "fine"},
        {"id": "empty", "text": "   "},
        {"id": "broken", "image": "broken.png"},
        {"id": "long", "text": "x" * 600},  # FakeModel allows 512 tokens
        {"id": "ok1", "text": "same id again"},
        {"id": "both", "text": "a", "image": "broken.png"},
        {"text": "no id"},
        {"id": "ok2", "text": "also fine"},
        {"id": "number", "text": 5},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2]"]
    source = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    report = embed_files([source], output, embedder, BulkOptions(batch_size=4))
    ids, vectors = read_output(output)
    assert ids == ["ok1", "ok2"]
    assert_vectors(vectors, expected(["fine", "also fine"]))
    errors = {
        e["id"]: e["error"]
        for e in map(json.loads, (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines())
    }
    where = source.as_posix()
    assert set(errors) == {"empty", "broken", "long", "ok1", "both", "number"} | {
        f"{where}:{n}" for n in (7, 10, 11)
    }
    assert errors["empty"] == "empty text"
    assert "image" in errors["broken"]
    assert (
        errors["long"]
        == "the item has 609 tokens, more than the limit of 512; shorten it or set truncate=true"
    )
    assert errors["ok1"].startswith("duplicate id")
    assert "exactly one of" in errors["both"]
    assert "--id-key" in errors[f"{where}:7"]
    assert errors["number"] == "'text' must be a string"
    assert errors[f"{where}:10"].startswith("not valid JSON")
    assert errors[f"{where}:11"] == "expected a JSON object, got list"
    assert (report.embedded, report.failed) == (2, 9)


def test_truncate_embeds_over_long_texts(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", ["y" * 600])
    embed_files([source], tmp_path / "out.jsonl", embedder, BulkOptions(truncate=True))
    assert_vectors(read_output(tmp_path / "out.jsonl")[1], expected(["y" * 600], truncate=True))


def test_failed_items_are_retried_on_resume(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", ["good", "z" * 600])
    output = tmp_path / "out.jsonl"
    embed_files([source], output, embedder)
    assert (tmp_path / "out.jsonl.errors.jsonl").read_text().count("\n") == 1
    report = embed_files([source], output, embedder, BulkOptions(truncate=True), resume=True)
    assert (report.embedded, report.skipped, report.failed) == (1, 1, 0)
    assert not (tmp_path / "out.jsonl.errors.jsonl").exists()


def test_undecodable_text_file_is_an_error_not_a_crash(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "latin.txt"
    source.write_bytes(b"fine line\ncaf\xe9\n")
    report = embed_files(
        [source], tmp_path / "out.jsonl", embedder, read=ReadOptions(whole_file=True)
    )
    assert (report.embedded, report.failed) == (0, 1)
    assert "not UTF-8" in (tmp_path / "out.jsonl.errors.jsonl").read_text()


# ----------------------------------------------------------------- option errors
def test_option_errors_are_clear(tmp_path: Path, embedder: Embedder) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:1])
    for vectors in ("multi", "both"):
        with pytest.raises(InvalidInput, match=f"--vectors {vectors} needs JSONL or Parquet"):
            embed_files([source], tmp_path / "o.npy", embedder, BulkOptions(vectors=vectors))
    with pytest.raises(InvalidInput, match="vectors must be one of single, multi, both"):
        BulkOptions(vectors="all")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown task 'nope'"):
        embed_files([source], tmp_path / "o.jsonl", embedder, BulkOptions(task="nope"))
    with pytest.raises(InvalidInput, match="dimensions must be between 1 and 32"):
        embed_files([source], tmp_path / "o.jsonl", embedder, BulkOptions(dimensions=64))
    with pytest.raises(
        InvalidInput, match="dimensions applies to single vectors; multi-vectors keep"
    ):
        embed_files(
            [source], tmp_path / "o.jsonl", embedder, BulkOptions(dimensions=8, vectors="multi")
        )
    with pytest.raises(InvalidInput, match="batch size must be at least 1"):
        BulkOptions(batch_size=0)
    with pytest.raises(InvalidInput, match="neither a file nor a folder"):
        embed_files([tmp_path / "missing.txt"], tmp_path / "o.jsonl", embedder)


def test_infer_format() -> None:
    assert [infer_format(Path(n)) for n in ("a.jsonl", "a.ndjson", "a.PARQUET", "a.npy")] == [
        "jsonl",
        "jsonl",
        "parquet",
        "numpy",
    ]
    assert infer_format(Path("a.bin"), "numpy") == "numpy"
    with pytest.raises(InvalidInput, match="use .jsonl, .parquet or .npy"):
        infer_format(Path("a.csv"))
    with pytest.raises(InvalidInput, match="unknown format 'csv'"):
        infer_format(Path("a.jsonl"), "csv")


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    source = write_lines(tmp_path / "docs.txt", TEXTS[:1])
    with pytest.raises(InvalidInput, match=r"pip install uniembed\[parquet\]"):
        embed_files([source], tmp_path / "out.parquet", embedder)


# ----------------------------------------------------------------- command line
def cli(model: FakeModel) -> tuple[typer.Typer, list[tuple[str, dict[str, Any]]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def loader(name: str, **kwargs: Any) -> Embedder:
        calls.append((name, kwargs))
        return Embedder(model)

    app = typer.Typer()
    app.command("embed")(make_embed_command(loader))
    app.command("other")(lambda: None)  # two commands: "embed" stays a subcommand
    return app, calls


def test_cli_embeds_and_reports(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "docs.txt", [*TEXTS[:3], ""])
    app, calls = cli(CountingModel())
    output = tmp_path / "out.parquet"
    args = [
        "embed",
        str(source),
        "-o",
        str(output),
        "--model",
        "m",
        "--device",
        "cpu",
        "--task",
        "code.query",
        "--dimensions",
        "8",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [("m", {"device": "cpu", "dtype": None})]
    assert "embedded 3 items" in result.output and "1 items failed" in result.output
    assert_vectors(read_output(output)[1], expected(TEXTS[:3], task="code.query", dimensions=8))


def test_cli_errors_and_interruption(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS)
    app, _ = cli(CountingModel(fail_on_call=2))
    bad = CliRunner().invoke(app, ["embed", str(source), "-o", str(tmp_path / "out.csv")])
    assert bad.exit_code == 2 and "use .jsonl, .parquet or .npy" in bad.output
    both = CliRunner().invoke(
        app, ["embed", str(source), "-o", str(tmp_path / "o.jsonl"), "--resume", "--overwrite"]
    )
    assert both.exit_code == 2 and "exclude each other" in both.output
    output = tmp_path / "out.jsonl"
    stopped = CliRunner().invoke(
        app, ["embed", str(source), "-o", str(output), "--batch-size", "3", "--no-progress"]
    )
    assert stopped.exit_code == 130 and "--resume" in stopped.output
    assert len(read_output(output)[0]) == 3
    again = CliRunner().invoke(app, ["embed", str(source), "-o", str(output)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_cli_vectors_choice_and_the_deprecated_multivector_flag(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:2])
    app, _ = cli(CountingModel())
    runs = {
        "multi": ["--vectors", "multi"],
        "alias": ["--multivector"],
        "both": ["--vectors", "both"],
    }
    for name, flags in runs.items():
        output = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(app, ["embed", str(source), "-o", str(output), *flags])
        assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "multi.jsonl").read_text().splitlines()[0])
    assert first == json.loads((tmp_path / "alias.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "embeddings"}
    both = json.loads((tmp_path / "both.jsonl").read_text().splitlines()[0])
    assert {"embedding", "embeddings", "document", "page", "grid", "metadata"} <= set(both)
    clash = ["embed", str(source), "-o", str(tmp_path / "x.jsonl"), "--multivector"]
    refused = CliRunner().invoke(app, [*clash, "--vectors", "both"])
    assert refused.exit_code == 2 and "--multivector means --vectors multi" in refused.output
    wrong = CliRunner().invoke(
        app, ["embed", str(source), "-o", str(tmp_path / "y.jsonl"), "--vectors", "all"]
    )
    assert wrong.exit_code == 2 and "vectors must be one of single, multi, both" in wrong.output
    help_text = CliRunner().invoke(app, ["embed", "--help"]).output
    assert "--vectors" in help_text and "--multivector" not in help_text


def test_cli_progress_counts_items_and_starts_after_the_output_check(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "blue.png").write_bytes(png_bytes((0, 0, 255)))
    (folder / "two.pdf").write_bytes(pdf_bytes([(10, 200, 10), (200, 10, 10)], (40, 30)))
    write_lines(folder / "lines.txt", TEXTS[:2])
    assert count_items([folder]) == 5 and count_records([folder]) == 4
    app, _ = cli(CountingModel())
    output = tmp_path / "out.jsonl"
    done = CliRunner().invoke(app, ["embed", str(folder), "-o", str(output)])
    assert done.exit_code == 0, done.output
    assert "5/5" in done.output and "embedded 5 items" in done.output
    again = CliRunner().invoke(app, ["embed", str(folder), "-o", str(output)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert "embedding" not in again.output and "0/5" not in again.output  # no empty bar first


def test_cli_model_flag_and_its_environment_twin(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "docs.txt", TEXTS[:1])
    app, calls = cli(CountingModel())
    args = ["embed", str(source), "--no-progress", "--dtype", "float32"]
    short = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a.jsonl"), "-m", "short"])
    env = {"UNIEMBED_MODEL": "from-env", "UNIEMBED_DEVICE": "cpu", "UNIEMBED_PROGRESS": "false"}
    twin = CliRunner().invoke(app, ["embed", str(source), "-o", str(tmp_path / "b.jsonl")], env=env)
    assert short.exit_code == 0 and twin.exit_code == 0, short.output + twin.output
    assert calls == [
        ("short", {"device": None, "dtype": "float32"}),
        ("from-env", {"device": "cpu", "dtype": None}),
    ]
    assert "1/1" not in twin.output  # UNIEMBED_PROGRESS=false: no bar
