"""Indexes built from stored embeddings (``Index.add_vectors``, ``uniembed index
--from-embeddings`` reading ``uniembed embed --vectors both``) equal indexes built by ``Index.add``
of the same items: same hits, scores, pages, metadata and similarity maps, in every mode, on the
tiny v4 checkpoint (real patch grids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import png_bytes
from tests.retrieval.retrieval_samples import TEXTS, color_image, page_pdf
from uniembed.bulk import BulkOptions, embed_files
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.retrieval.index import Hit, Index
from uniembed.retrieval.retriever import MODES

DIMENSIONS = 32
QUERIES = ["how do solar cells make power", "baking bread", "red picture"]
PDF_COLORS = [(1, 0, 0), (0, 0.6, 0), (0, 0, 1)]
TASK = "retrieval.passage"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list, list]:
    """The same documents as a JSONL file for ``uniembed embed`` and as library inputs."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "red.png").write_bytes(png_bytes(color_image("red")))
    (folder / "green.png").write_bytes(png_bytes(color_image("green", (84, 112))))
    (folder / "report.pdf").write_bytes(page_pdf(PDF_COLORS))
    texts = list(TEXTS.items())[:6]
    records = [
        {"id": key, "text": text, "metadata": {"lang": "en" if n % 2 else "de", "n": n}}
        for n, (key, text) in enumerate(texts)
    ]
    records += [
        {"id": "red", "image": "red.png", "metadata": {"n": 6}},
        {"id": "green", "image": "green.png"},
        {"id": "report", "pdf": "report.pdf", "metadata": {"n": 8}},
    ]
    (folder / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ids = [r["id"] for r in records]
    inputs = [text for _, text in texts] + [
        {"image": str(folder / "red.png")},
        {"image": str(folder / "green.png")},
        {"pdf": str(folder / "report.pdf")},
    ]
    metadata = [r.get("metadata") for r in records]
    return folder / "docs.jsonl", ids, inputs, metadata


@pytest.fixture(scope="module")
def reference(tiny_v4: Embedder, corpus: tuple, tmp_path_factory: pytest.TempPathFactory) -> Index:
    """The index built by ``Index.add`` (the model runs)."""
    _, ids, inputs, metadata = corpus
    index = Index.create(
        tmp_path_factory.mktemp("ref") / "index",
        tiny_v4,
        dimensions=DIMENSIONS,
        thumbnails=False,
        muvera=True,
    )
    index.add(inputs, ids, metadata, batch_items=4)
    yield index
    index.close()


@pytest.fixture(scope="module")
def stored(tiny_v4: Embedder, corpus: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``uniembed embed --vectors both`` of the same documents, full-size single vectors."""
    output = tmp_path_factory.mktemp("embed") / "docs.parquet"
    options = BulkOptions(task=TASK, vectors="both", batch_size=3)
    report = embed_files([corpus[0]], output, tiny_v4, options)
    assert (report.embedded, report.failed) == (11, 0)
    return output


def hits_of(index: Index, query: str, mode: str) -> list[Hit]:
    return index.search(query, k=10, mode=mode, candidates=100, maps=True)


def assert_same_hits(got: list[Hit], want: list[Hit]) -> None:
    assert [(h.id, h.page, h.kind) for h in got] == [(h.id, h.page, h.kind) for h in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-5)
        assert (g.metadata, g.text) == (w.metadata, w.text)
        assert (g.similarity is None) == (w.similarity is None)
        if g.similarity is not None and w.similarity is not None:
            torch.testing.assert_close(g.similarity.scores, w.similarity.scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_from_embeddings_equals_index_add_in_every_mode(
    tiny_v4: Embedder, reference: Index, stored: Path, tmp_path: Path, mode: str
) -> None:
    index = Index.create(
        tmp_path / "index", tiny_v4, dimensions=DIMENSIONS, thumbnails=False, muvera=True
    )
    with index:
        assert index.add_embeddings_file(stored, batch_items=3) == 9  # documents
        assert index.count() == reference.count() == 11
        for query in QUERIES:
            assert_same_hits(hits_of(index, query, mode), hits_of(reference, query, mode))
        assert [h.page for h in index.get("report")] == [1, 2, 3]


def test_add_vectors_from_encode_outputs_equals_index_add(
    tiny_v4: Embedder, reference: Index, corpus: tuple, tmp_path: Path
) -> None:
    _, ids, inputs, metadata = corpus
    texts = inputs[:6]
    result = tiny_v4.encode(inputs, task=TASK, output="both", dimensions=DIMENSIONS)
    entry_ids = ids[:-1] + ["report"] * 3
    index = Index.create(tmp_path / "index", tiny_v4, dimensions=DIMENSIONS, thumbnails=False)
    with index:
        written = index.add_vectors(
            entry_ids,
            torch.stack(result.embeddings).numpy(),
            [m.numpy() for m in result.multivectors],
            metadata=metadata[:-1] + [metadata[-1]] * 3,
            pages=[None] * 8 + [1, 2, 3],
            patch_grids=result.patch_grids,
            texts=texts + [None] * 5,
        )
        assert written == ids
        for mode in ("multivector", "two-stage"):
            for query in QUERIES:
                assert_same_hits(hits_of(index, query, mode), hits_of(reference, query, mode))


def test_cli_index_from_embeddings(
    tiny_v4_path: Path, reference: Index, stored: Path, tmp_path: Path
) -> None:
    from uniembed.cli import app

    location = tmp_path / "index"
    args = ["index", str(location), "--from-embeddings", str(stored), "-m", str(tiny_v4_path)]
    result = CliRunner().invoke(app, [*args, "--dimensions", str(DIMENSIONS), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["entries"] == 11
    with Index.open(location, device="cpu") as index:
        for query in QUERIES:
            assert_same_hits(
                hits_of(index, query, "multivector"), hits_of(reference, query, "multivector")
            )


def test_stored_embeddings_of_another_model_or_task_are_refused(
    tiny_v4: Embedder, corpus: tuple, tmp_path: Path
) -> None:
    output = tmp_path / "query.parquet"
    options = BulkOptions(task="retrieval.query", vectors="both")
    embed_files([corpus[0]], output, tiny_v4, options)
    with Index.create(tmp_path / "index", tiny_v4) as index:
        with pytest.raises(InvalidInput, match="embedded with task retrieval.query; this index"):
            index.add_embeddings_file(output)
        single = tmp_path / "single.parquet"
        embed_files([corpus[0]], single, tiny_v4, BulkOptions(task=TASK))
        with pytest.raises(InvalidInput, match="no embeddings column: write it with"):
            index.add_embeddings_file(single)
        assert index.count() == 0


# ----------------------------------------------------------------- validation
@pytest.fixture
def fake_index(fake_embedder: Embedder, tmp_path: Path) -> Index:
    index = Index.create(tmp_path / "fake", fake_embedder, dimensions=16)
    yield index
    index.close()


def vectors(count: int, dim: int = 32, rows: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    generator = np.random.default_rng(0)
    dense = generator.standard_normal((count, dim)).astype(np.float32)
    multi = [generator.standard_normal((rows, 8)).astype(np.float32) for _ in range(count)]
    return dense, multi


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": ["a"]}, "embeddings must be \\(entries, dimensions\\) with 1 entries, got shape"),
        ({"embeddings": np.ones((2, 8), np.float32)}, "embeddings have 8 dimensions; this index"),
        ({"embeddings": np.ones((2, 2, 32))}, "embeddings must be \\(entries, dimensions\\)"),
        ({"embeddings": [np.ones(32), np.ones(31)]}, "one vector per entry of equal size"),
        ({"multivectors": None}, "this index stores multi-vectors: give one \\(tokens, 8\\)"),
        ({"multivectors": [np.ones((3, 8))]}, "got 1 multivectors for 2 ids"),
        ({"multivectors": [np.ones((3, 8)), np.ones((3, 7))]}, "entry 1: a multi-vector must be"),
        ({"multivectors": [np.ones((3, 8)), np.ones((0, 8))]}, "entry 1: a multi-vector must be"),
        ({"metadata": [{}]}, "got 1 metadata for 2 ids"),
        ({"metadata": [{}, "x"]}, "entry 1 \\(document 'b'\\): metadata must be a JSON object"),
        ({"metadata": [{}, {"x": {1, 2}}]}, "metadata.x is not JSON \\(a set\\)"),
        ({"pages": [0, None]}, "a page number is an integer ≥ 1, got 0"),
        ({"patch_grids": [(0, 2, 3), None]}, "patch grid \\(0, 2, 3\\) covers rows up to 6, but"),
        ({"patch_grids": [(0, 2), None]}, "a patch grid is \\(start, height, width\\)"),
        ({"kinds": ["page", "text"]}, "kind 'page' and a page number go together"),
        ({"kinds": ["pdf", "text"]}, "kind must be one of text, image, page"),
        ({"ids": ["a", ""]}, "entry 1: document id must be a non-empty string"),
        ({"ids": ["a", "a"]}, "document 'a' has an entry without a page twice"),
        ({"texts": ["x", 3]}, "entry 1 \\(document 'b'\\): text must be a string"),
    ],
)
def test_bad_stored_embeddings_get_clear_errors(
    fake_index: Index, change: dict, message: str
) -> None:
    dense, multi = vectors(2)
    arguments = {"ids": ["a", "b"], "embeddings": dense, "multivectors": multi, **change}
    ids, embeddings, multivectors = (
        arguments.pop(k) for k in ("ids", "embeddings", "multivectors")
    )
    with pytest.raises(InvalidInput, match=message):
        fake_index.add_vectors(ids, embeddings, multivectors, **arguments)
    assert fake_index.count() == 0  # checked before anything is written


def test_documents_must_be_consecutive_and_values_finite(fake_index: Index) -> None:
    dense, multi = vectors(3)
    with pytest.raises(InvalidInput, match="entry 2: document 'a' appears twice in one add"):
        fake_index.add_vectors(["a", "b", "a"], dense, multi, pages=[1, None, 2])
    multi[1][0, 0] = float("nan")
    with pytest.raises(InvalidInput, match="entry 1: the multi-vector hold NaN"):
        fake_index.add_vectors(["a", "b", "c"], dense, multi)
    dense[0, 0] = float("inf")
    with pytest.raises(InvalidInput, match="embeddings hold NaN or infinite values"):
        fake_index.add_vectors(["a", "b", "c"], dense, multi)


def test_float16_multivectors_are_stored_as_their_values(
    fake_embedder: Embedder, fake_index: Index, tmp_path: Path
) -> None:
    """float16 multi-vectors (what ``uniembed embed`` and most stores hold) skip the float32 round
    trip: the index equals one given the same values in float32, in every mode, scores included."""
    dense, multi = vectors(6, dim=16, rows=7)
    half = [m.astype(np.float16) for m in multi]
    ids = [f"d{n}" for n in range(6)]
    fake_index.add_vectors(ids, dense, half)
    widened = Index.create(tmp_path / "widened", fake_embedder, dimensions=16)
    widened.add_vectors(ids, dense, [h.astype(np.float32) for h in half])
    query = torch.from_numpy(multi[2][:3])
    for mode in [m for m in MODES if m != "muvera"]:  # muvera: an index created with it
        got = fake_index.search_vectors(torch.from_numpy(dense[2]), query, k=6, mode=mode)
        want = widened.search_vectors(torch.from_numpy(dense[2]), query, k=6, mode=mode)
        assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want], mode
    widened.close()
    half[4][1, 2] = np.inf
    with pytest.raises(InvalidInput, match="entry 4: the multi-vector hold NaN or infinite"):
        fake_index.add_vectors(["x"] * 6, dense, half, pages=list(range(1, 7)))


def test_a_pdf_from_vectors_is_written_whole_and_replaced_whole(fake_index: Index) -> None:
    dense, multi = vectors(4)
    written: list[int] = []
    ids = fake_index.add_vectors(
        ["doc", "doc", "doc", "other"],
        dense,
        multi,
        pages=[1, 2, 3, None],
        batch_items=1,
        on_written=written.append,
    )
    assert ids == ["doc", "other"] and written == [1, 1]
    assert [(h.kind, h.page) for h in fake_index.get("doc")] == [("page", p) for p in (1, 2, 3)]
    fake_index.add_vectors(["doc"], dense[:1], multi[:1], pages=[1])  # replaces all three pages
    assert [h.page for h in fake_index.get("doc")] == [1]
    assert fake_index.count() == 2


def test_parquet_files_of_other_writers_and_their_mistakes(
    fake_index: Index, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dense, multi = vectors(3)

    def write(name: str, ids: list[str], **extra: list) -> Path:
        table = pa.table(
            {
                "id": ids,
                "embedding": [v.tolist() for v in dense[: len(ids)]],
                "embeddings": [m.tolist() for m in multi[: len(ids)]],
                **extra,
            }
        )
        pq.write_table(table, tmp_path / name)
        return tmp_path / name

    plain = write("plain.parquet", ["a", "b", "c"])  # no manifest, no entry columns
    assert fake_index.add_embeddings_file(plain) == 3
    assert [(h.kind, h.page) for h in fake_index.get("b")] == [("text", None)]
    apart = write("apart.parquet", ["x", "y", "x"], document=["x", "y", "x"])
    with pytest.raises(InvalidInput, match="row 2: document 'x' appeared before; the rows of a"):
        fake_index.add_embeddings_file(apart)
    bad_json = write("json.parquet", ["p"], metadata=["{not json"])
    with pytest.raises(InvalidInput, match="json.parquet row 0: metadata is not JSON"):
        fake_index.add_embeddings_file(bad_json)
    short = write("short.parquet", ["q"], grid=[[0, 9, 9]])
    with pytest.raises(InvalidInput, match="short.parquet: entry 0 .* covers rows up to 81"):
        fake_index.add_embeddings_file(short)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(InvalidInput, match="not a Parquet file"):
        fake_index.add_embeddings_file(tmp_path / "text.parquet")
    assert fake_index.count() == 3


def test_stored_vectors_are_written_in_batches_of_token_vectors(
    fake_index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write (one store operation, one sync) takes whole documents until it holds WRITE_TOKENS
    token vectors (or ``batch_items`` entries): large enough to run at the disk's speed."""
    from uniembed.retrieval import stored

    monkeypatch.setattr(stored, "WRITE_TOKENS", 10)
    dense, multi = vectors(7, rows=4)
    written: list[int] = []
    ids = ["a", "b", "c", "c", "c", "d", "e"]
    pages = [None, None, 1, 2, 3, None, None]
    fake_index.add_vectors(ids, dense, multi, pages=pages, on_written=written.append)
    assert written == [3, 2]  # documents: a, b and c (3 pages: 20 ≥ 10 tokens), then d and e
    assert fake_index.count() == 7  # entries
    written.clear()
    fake_index.add_vectors(ids, dense, multi, pages=pages, batch_items=1, on_written=written.append)
    assert written == [1, 1, 1, 1, 1]
    with pytest.raises(InvalidInput, match="batch_items must be an integer >= 1, got 0"):
        fake_index.add_vectors(ids, dense, multi, pages=pages, batch_items=0)


def test_reading_a_file_holds_a_batch_not_the_file(tmp_path: Path) -> None:
    """Arrow memory while a file is read stays about one batch of rows, however large the file
    (pyarrow's pre_buffer kept every column chunk read: a 100k-page file grew to 21 GB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uniembed.retrieval.stored import read_embeddings

    pages, tokens, dim = 640, 64, 128
    page_bytes = tokens * dim * 2
    rows = np.random.default_rng(0).standard_normal((pages, tokens * dim)).astype(np.float16)
    table = pa.table(
        {
            "id": [f"p{n}" for n in range(pages)],
            "embedding": [[1.0, 0.0]] * pages,
            "embeddings": pa.array([row.tobytes() for row in rows], pa.large_binary()),
        }
    )
    pq.write_table(table, tmp_path / "pages.parquet", row_group_size=32)
    del table
    before, peak, read = pa.total_allocated_bytes(), 0, 0
    batches = read_embeddings(
        tmp_path / "pages.parquet",
        with_multivectors=True,
        multivector_dim=dim,
        batch_rows=16,
        batch_entries=16,
    )
    for batch in batches:
        assert batch.multivectors is not None
        read += len(batch.ids)
        peak = max(peak, pa.total_allocated_bytes() - before)
    assert read == pages
    assert peak < 8 * 32 * page_bytes  # a few row groups of 32 pages; the file is 640 pages


def test_parquet_values_beyond_float16_are_refused_by_name(
    fake_index: Index, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dense, multi = vectors(2)
    multi[1][2, 3] = 1e6  # finite in float32, infinite in float16 (what the index keeps)
    table = pa.table(
        {
            "id": ["a", "b"],
            "embedding": [v.tolist() for v in dense],
            "embeddings": [m.tolist() for m in multi],
        }
    )
    pq.write_table(table, tmp_path / "wide.parquet")
    with pytest.raises(InvalidInput, match="wide.parquet: column 'embeddings' holds values that"):
        fake_index.add_embeddings_file(tmp_path / "wide.parquet")
    assert fake_index.count() == 0


def test_float16_bytes_of_other_writers_and_their_mistakes(
    fake_index: Index, tmp_path: Path
) -> None:
    """The layout `uniembed embed` writes (float16 rows as bytes, binary or large_binary) read
    from any writer: the same index as the same vectors given as lists; rows that are not whole
    token vectors, or not finite, are refused by file and row before anything is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dense, multi = vectors(3)
    half = [m.astype(np.float16) for m in multi]

    def write(name: str, values: list[bytes], kind: pa.DataType, **extra: list) -> Path:
        table = pa.table(
            {
                "id": ["a", "b", "c"][: len(values)],
                "embedding": [v.tolist() for v in dense[: len(values)]],
                "embeddings": pa.array(values, kind),
                **extra,
            }
        )
        pq.write_table(table, tmp_path / name)
        return tmp_path / name

    from uniembed.retrieval.stored import read_embeddings

    for kind in (pa.binary(), pa.large_binary()):
        path = write(f"{kind}.parquet", [h.tobytes() for h in half], kind)
        counted = write(f"counted-{kind}.parquet", [h.tobytes() for h in half], kind,
                        tokens=[5, 5, 5])  # fmt: skip
        for file, dim in ((path, 8), (counted, None)):  # the index's size, or the file's own
            (batch,) = read_embeddings(file, with_multivectors=True, multivector_dim=dim)
            assert batch.ids == ["a", "b", "c"] and batch.multivectors is not None
            for got, want in zip(batch.multivectors, half, strict=True):
                assert got.dtype == np.float16 and got.tobytes() == want.tobytes()
        assert fake_index.add_embeddings_file(path) == 3
    miscounted = write("count.parquet", [h.tobytes() for h in half], pa.binary(), tokens=[5, 4, 5])
    with pytest.raises(InvalidInput, match="count.parquet row 1: .* rows .80 bytes for 4 tokens"):
        fake_index.add_embeddings_file(miscounted)
    with pytest.raises(InvalidInput, match="holds bytes but no 'tokens' count"):
        list(read_embeddings(path, with_multivectors=True))
    torn = [h.tobytes() for h in half]
    torn[1] = torn[1][:-2]
    with pytest.raises(
        InvalidInput,
        match="torn.parquet row 1: column .embeddings. is not whole 8-d float16 rows .78 bytes",
    ):
        fake_index.add_embeddings_file(write("torn.parquet", torn, pa.binary()))
    empty = [half[0].tobytes(), b""]
    with pytest.raises(InvalidInput, match="empty.parquet row 1: column 'embeddings' is not whole"):
        fake_index.add_embeddings_file(write("empty.parquet", empty, pa.binary()))
    infinite = half[0].copy()
    infinite[1, 1] = np.inf
    with pytest.raises(InvalidInput, match="inf.parquet: column 'embeddings' holds values that"):
        fake_index.add_embeddings_file(write("inf.parquet", [infinite.tobytes()], pa.binary()))
    assert fake_index.count() == 3


def test_a_bad_row_further_in_the_file_leaves_the_batches_before_it_written(
    fake_index: Index, tmp_path: Path
) -> None:
    """Reading, encoding and writing run ahead of each other; a row that is refused (a NaN in its
    multi-vector) stops the file where it lies: every batch read before it is in the index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uniembed.retrieval.stored import WRITE_TOKENS

    dense, multi = vectors(400, rows=800)
    half = [m.astype(np.float16) for m in multi]
    half[300][1, 2] = np.nan
    table = pa.table(
        {
            "id": [f"doc-{n}" for n in range(400)],
            "embedding": [v.tolist() for v in dense],
            "embeddings": pa.array([h.tobytes() for h in half], pa.large_binary()),
        }
    )
    pq.write_table(table, tmp_path / "late-nan.parquet")
    written: list[int] = []
    with pytest.raises(InvalidInput, match="late-nan.parquet: column 'embeddings' holds values"):
        fake_index.add_embeddings_file(
            tmp_path / "late-nan.parquet", batch_items=16, on_written=written.append
        )
    first_batch = WRITE_TOKENS // 800 + 1  # pages read before a batch is full (164)
    assert fake_index.count() == sum(written) == first_batch  # in writes of 16 pages
    assert len(written) == -(-first_batch // 16)
