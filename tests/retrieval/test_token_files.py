"""The token files of an embedded index: opened without reading vectors, kept in step with the store
through replaces and deletes, and settled after a process dies at any point of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from uniembed.core.scores import maxsim
from uniembed.errors import InvalidInput
from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Layout, Point, point_id
from uniembed.retrieval.stores import create_store, open_store
from uniembed.retrieval.token_files import JOURNAL_FILE, MAX_RUNS, StagingBuffer, TokenFiles
from uniembed.testing.corpus import synthetic_corpus

DIM = 128


def build(path: Path, docs: int = 40, tokens: int = 12, seed: int = 0) -> Retriever:
    corpus = synthetic_corpus(docs, tokens, queries=4, seed=seed)
    retriever = Retriever.open(create_store(path, Layout.build(128, DIM, {}), {}))
    corpus.write_to(retriever, batch_rows=10 * tokens)
    return retriever


def point(doc_id: str, dense_seed: int) -> Point:
    dense = torch.nn.functional.normalize(
        torch.randn(128, generator=torch.Generator().manual_seed(dense_seed)), dim=0
    )
    return Point(
        point_id(doc_id, None), dense.tolist(), None, {"id": doc_id, "kind": "text", "metadata": {}}
    )


def alive_rows(retriever: Retriever) -> int:
    return int(retriever.tokens.snapshot.alive.sum())


def test_scan_is_maxsim_over_every_live_entry(tmp_path: Path) -> None:
    corpus = synthetic_corpus(60, 9, queries=3, seed=1)
    retriever = Retriever.open(create_store(tmp_path / "i", Layout.build(128, DIM, {}), {}))
    corpus.write_to(retriever, batch_rows=7 * 9)
    query = corpus.queries[0]
    expected = maxsim(query, corpus.multivectors.float())  # (docs,) float32 truth
    found = retriever.search(None, query, 60, mode="multivector", candidates=0, payload=["id"])
    scores = {f.payload["id"]: f.score for f in found}
    assert len(scores) == 60
    for position in range(60):
        assert scores[corpus.doc_id(position)] == pytest.approx(float(expected[position]), abs=2e-3)
    retriever.close()


def test_replaced_and_deleted_documents_leave_the_scan(tmp_path: Path) -> None:
    retriever = build(tmp_path / "i")
    rows = retriever.tokens.snapshot.size
    vectors = torch.nn.functional.normalize(torch.randn(5, DIM), dim=-1)
    retriever.write(["doc-3"], [point("doc-3", 1)], [vectors])  # replace doc-3
    retriever.delete(["doc-4", "doc-unknown"])
    assert retriever.tokens.snapshot.size == rows + 1  # the old rows stay until compaction
    assert alive_rows(retriever) == retriever.store.count() == 39
    found = retriever.search(None, vectors, 3, mode="multivector", candidates=0, payload=["id"])
    assert found[0].payload["id"] == "doc-3"
    assert found[0].score == pytest.approx(5.0, abs=1e-2)  # its own five unit rows
    ids = [
        f.payload["id"]
        for f in retriever.search(
            None, vectors, 50, mode="multivector", candidates=0, payload=["id"]
        )
    ]
    assert "doc-4" not in ids and ids.count("doc-3") == 1
    retriever.close()
    reopened = Retriever.open(open_store(tmp_path / "i"))
    assert alive_rows(reopened) == 39 and reopened.tokens.snapshot.size == rows + 1
    reopened.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_write_with_a_value_that_is_not_finite_writes_nothing(tmp_path: Path, bad) -> None:
    """The token files check a write's vectors once for all codecs (each codec trusts that
    check): a NaN or infinity is refused before the journal, and the files stay as they were."""
    retriever = build(tmp_path / "i", docs=10)
    before = {f.name: f.read_bytes() for f in (tmp_path / "i" / "tokens").iterdir() if f.is_file()}
    for dtype in (torch.float32, torch.float16):
        vectors = torch.nn.functional.normalize(torch.randn(5, DIM), dim=-1).to(dtype)
        vectors[3, 7] = bad
        with pytest.raises(InvalidInput, match="token vectors must be finite"):
            retriever.write(["doc-new"], [point("doc-new", 1)], [vectors])
    after = {f.name: f.read_bytes() for f in (tmp_path / "i" / "tokens").iterdir() if f.is_file()}
    assert after == before and not (tmp_path / "i" / "tokens" / JOURNAL_FILE).exists()
    assert retriever.store.count() == 10
    retriever.close()


def test_a_filter_limits_the_scan(tmp_path: Path) -> None:
    from uniembed.retrieval.filters import Match

    retriever = build(tmp_path / "i")
    query = torch.nn.functional.normalize(torch.randn(6, DIM), dim=-1)
    found = retriever.search(
        None,
        query,
        40,
        mode="multivector",
        candidates=0,
        conditions=(Match("metadata.shard", 1),),
        payload=["id", "metadata"],
    )
    assert len(found) == 10 and all(f.payload["metadata"]["shard"] == 1 for f in found)
    retriever.close()


def test_opening_reads_no_vectors(tmp_path: Path) -> None:
    retriever = build(tmp_path / "i", docs=3000, tokens=64)
    codes = retriever.tokens.nbytes
    assert codes == 3000 * 64 * 256  # float16
    retriever.close()
    script = textwrap.dedent(
        f"""
        import resource, sys
        from uniembed.retrieval.retriever import Retriever
        from uniembed.retrieval.stores import open_store

        def rss():
            with open("/proc/self/status") as status:
                return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmRSS"))

        store = open_store({str(tmp_path / "i")!r})
        before = rss()
        retriever = Retriever.open(store)
        print(rss() - before, retriever.tokens.snapshot.size)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown, size = (int(x) for x in out.stdout.split())
    assert size == 3000
    assert grown < 0.02 * codes  # the entry table at most (96 KB), not the ~52 MB of codes


KILLED_WRITER = """
import os, signal, sys, torch
from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Point, point_id
from uniembed.retrieval.stores import open_store

where = sys.argv[2]
store = open_store(sys.argv[1])
real_upsert = store.upsert

def upsert(points):
    if where == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_upsert(points)
    os.kill(os.getpid(), signal.SIGKILL)

store.upsert = upsert  # the test's stand-in for a crash at that moment, on the real store
retriever = Retriever.open(store)
dense = torch.nn.functional.normalize(torch.ones(128), dim=0).tolist()
points = [
    Point(point_id(d, None), dense, None, {"id": d, "kind": "text", "metadata": {}})
    for d in ("doc-1", "new")
]
unit = torch.ones(5, 128) / 128**0.5
write = retriever.prepare(["doc-1", "new"], points, [unit[:3], unit[:2]])
later = Point(point_id("later", None), dense, None, {"id": "later", "kind": "text", "metadata": {}})
then = retriever.prepare(["later"], [later], [unit[:4]]) if where == "after-ahead" else None
retriever.write_prepared(write, then=then)  # then: its codes go to disk during the upsert
"""


@pytest.mark.parametrize("where", ["before", "after", "after-ahead"])
def test_a_writer_killed_around_the_store_write_is_settled_on_open(
    tmp_path: Path, where: str
) -> None:
    retriever = build(tmp_path / "i")
    rows = retriever.tokens.snapshot.size
    retriever.close()
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "i"), where], check=False
    )
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / "i" / "tokens" / JOURNAL_FILE).exists()
    reopened = Retriever.open(open_store(tmp_path / "i"))
    assert not (tmp_path / "i" / "tokens" / JOURNAL_FILE).exists()
    query = torch.ones(1, DIM) / DIM**0.5
    found = reopened.search(None, query, 100, mode="multivector", candidates=0, payload=["id"])
    ids = [f.payload["id"] for f in found]
    if where == "before":  # the store's delete went through, its upsert did not (an
        # interrupted replace leaves the document absent, as Index.update says): rows undone
        assert reopened.tokens.snapshot.size == rows and "new" not in ids and "doc-1" not in ids
        assert alive_rows(reopened) == 39
    else:  # the store holds the write: the new rows live, doc-1's old row is retired
        assert reopened.tokens.snapshot.size == rows + 2
        assert ids.count("doc-1") == 1 and "new" in ids and alive_rows(reopened) == 41
        assert ids[:2] in (["doc-1", "new"], ["new", "doc-1"])
    assert alive_rows(reopened) == reopened.store.count()
    end = int(reopened.tokens.snapshot.offsets[-1])  # no code of "later" is left past the end
    for name in reopened.tokens.names:
        width = reopened.tokens.codec(name).bytes_per_token
        assert os.path.getsize(tmp_path / "i" / "tokens" / f"{name}.codes") == end * width
    reopened.close()


def test_codes_past_the_last_entry_are_cut_on_open(tmp_path: Path) -> None:
    retriever = build(tmp_path / "i", docs=5)
    end = int(retriever.tokens.snapshot.offsets[-1])
    retriever.close()
    with open(tmp_path / "i" / "tokens" / "float16.codes", "ab") as codes:
        codes.write(b"\x01" * 999)  # what an undone write leaves
    files = TokenFiles.open(tmp_path / "i" / "tokens", lookup=None)
    assert os.path.getsize(tmp_path / "i" / "tokens" / "float16.codes") == end * 2 * DIM
    assert np.asarray(files.snapshot.codes["float16"]).shape == (end, 2 * DIM)
    files.close()


def test_compaction_frees_the_dead_rows_and_keeps_every_search(tmp_path: Path) -> None:
    retriever = build(tmp_path / "i")
    query = torch.nn.functional.normalize(torch.randn(4, DIM), dim=-1)

    def ranked(r: Retriever) -> list[tuple[str, float]]:
        found = r.search(None, query, 50, mode="multivector", candidates=0, payload=["id"])
        return [(f.payload["id"], round(f.score, 4)) for f in found]

    retriever.delete([f"doc-{n}" for n in range(0, 40, 3)])  # 14 of 40
    before = ranked(retriever)
    assert retriever.optimize(compact=False) == 0
    freed = retriever.optimize()  # 14 dead of 40: over a fifth
    assert freed == 14 * 12 * 256
    assert retriever.tokens.snapshot.size == 26 == alive_rows(retriever)
    assert ranked(retriever) == before
    assert retriever.optimize() == 0  # nothing dead now
    retriever.close()
    reopened = Retriever.open(open_store(tmp_path / "i"))
    assert ranked(reopened) == before
    dense = reopened.search(
        torch.ones(128), query, 5, mode="two-stage", candidates=30, payload=["id"]
    )
    assert [f.payload["id"] for f in dense] == [i for i, _ in before[:5]]
    reopened.close()


def test_a_compaction_killed_before_the_swap_is_finished_on_open(tmp_path: Path) -> None:
    retriever = build(tmp_path / "i")
    retriever.delete(["doc-1", "doc-2"])
    query = torch.nn.functional.normalize(torch.randn(4, DIM), dim=-1)
    before = [
        f.payload["id"]
        for f in retriever.search(None, query, 50, mode="multivector", candidates=0, payload=["id"])
    ]
    retriever.close()
    script = textwrap.dedent(
        f"""
        import os, signal
        from uniembed.retrieval import token_files
        from uniembed.retrieval.retriever import Retriever
        from uniembed.retrieval.stores import open_store

        def killed(*args):  # the files are complete and marked: die before the swap
            os.kill(os.getpid(), signal.SIGKILL)

        token_files._swap_compacted = killed
        Retriever.open(open_store({str(tmp_path / "i")!r})).optimize(compact=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False)
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / "i" / "tokens" / "compact.json").exists()
    reopened = Retriever.open(open_store(tmp_path / "i"))
    assert not list((tmp_path / "i" / "tokens").glob("*.compact*"))
    assert reopened.tokens.snapshot.size == 38 == alive_rows(reopened)
    after = [
        f.payload["id"]
        for f in reopened.search(None, query, 50, mode="multivector", candidates=0, payload=["id"])
    ]
    assert after == before
    reopened.close()


@pytest.mark.parametrize("codecs", [("residual",), ("binary", "residual")])
def test_a_codec_trained_on_the_first_write_survives_reopening_before_and_after(
    tmp_path: Path, codecs: tuple[str, ...]
) -> None:
    path = tmp_path / "i"
    Retriever.open(create_store(path, Layout.build(128, DIM, {}, codecs=codecs), {})).close()
    retriever = Retriever.open(open_store(path))  # still untrained: nothing to cut
    corpus = synthetic_corpus(30, 8, queries=2, seed=3)
    corpus.write_to(retriever, batch_rows=10 * 8)
    retriever.close()
    retriever = Retriever.open(open_store(path))
    assert retriever.tokens.codec("residual").bytes_per_token <= 40
    found = retriever.search(None, corpus.queries[0], 30, mode="multivector", candidates=0)
    assert len(found) == 30
    retriever.close()


def test_a_rerank_gathers_scattered_entries_in_batches_and_scores_each_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniembed.retrieval import token_files

    monkeypatch.setattr(token_files, "RERANK_TOKENS", 25)  # batches of 1-3 entries of 12 tokens
    retriever = build(tmp_path / "i", docs=40, tokens=12)
    files = retriever.tokens
    query = torch.nn.functional.normalize(torch.randn(5, DIM), dim=-1).numpy()
    rows = [37, 3, 20, 21, 8, 39, 0, 3]
    reranked = dict(files.rerank("float16", query, rows, k=40))
    assert sorted(reranked) == sorted(set(rows))
    for row in set(rows):
        expected = maxsim(torch.from_numpy(query), torch.from_numpy(files.vectors(row))[None])
        assert reranked[row] == pytest.approx(float(expected[0]), abs=1e-4)
    retriever.close()


def test_the_staging_buffer_gathers_like_concatenate_and_is_reused() -> None:
    rng = np.random.default_rng(0)
    staging = StagingBuffer()
    first = [rng.standard_normal((n, DIM)).astype(np.float16) for n in (3, 800, 41)]
    gathered = staging.gather(first, np.dtype(np.float16))
    np.testing.assert_array_equal(gathered, np.concatenate(first))
    address = gathered.__array_interface__["data"][0]
    # a smaller write of another dtype reuses the same memory, cast as astype would
    second = [rng.standard_normal((n, DIM)) for n in (5, 100)]  # float64
    gathered = staging.gather(second, np.dtype(np.float32))
    assert gathered.dtype == np.float32 and gathered.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(gathered, np.concatenate(second).astype(np.float32))
    # a larger one grows it, with head room
    third = [rng.standard_normal((2000, DIM)).astype(np.float32)]
    np.testing.assert_array_equal(staging.gather(third, np.dtype(np.float32)), third[0])


@pytest.mark.parametrize("codecs", [("float16", "binary"), ("int8", "binary", "float16")])
def test_writes_through_the_reused_buffer_keep_every_entry(
    tmp_path: Path, codecs: tuple[str, ...]
) -> None:
    """Batches of different sizes and dtypes, one after another: each entry reads back as written
    and every codec's file holds the codes of every vector in order (a buffer reused too early
    would leave the last batch's values in earlier entries)."""
    layout = Layout.build(128, DIM, {}, codecs=codecs)
    retriever = Retriever.open(create_store(tmp_path / "index", layout, {}))
    rng = np.random.default_rng(1)
    written: dict[str, np.ndarray] = {}
    given: list[np.ndarray] = []  # as given: float32 or float16
    for batch, (count, dtype) in enumerate([(7, np.float32), (3, np.float16), (12, np.float32)]):
        ids = [f"doc-{batch}-{n}" for n in range(count)]
        multi = [
            torch.from_numpy(rng.standard_normal((9 + n, DIM)).astype(dtype)) for n in range(count)
        ]
        retriever.write(ids, [point(i, k) for k, i in enumerate(ids)], multi)
        written.update({i: m.numpy().astype(np.float16) for i, m in zip(ids, multi)})
        given.extend(m.numpy() for m in multi)
    rows = retriever.tokens.snapshot.size
    assert rows == len(written)
    stored = {
        retriever.tokens.point_ids([row])[0]: retriever.tokens.vectors(row) for row in range(rows)
    }
    for doc_id, vectors in written.items():
        np.testing.assert_array_equal(stored[point_id(doc_id, None)], vectors.astype(np.float32))
    for name in codecs:
        codec = retriever.tokens.codec(name)
        expected = np.concatenate([codec.encode(vectors) for vectors in given])
        assert (retriever.tokens.snapshot.codes[name] == expected).all()
    retriever.close()


def _pieces(rng: np.random.Generator, sizes: list[int], dtype=np.float16) -> list[np.ndarray]:
    """Views of one array, one after another in memory (the rows of one Parquet batch)."""
    whole = rng.standard_normal((sum(sizes), DIM)).astype(dtype)
    return np.split(whole, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize(
    "layout",
    ["one run", "three runs", "more runs than MAX_RUNS", "copies", "mixed dtypes"],
)
def test_encoding_where_the_rows_lie_equals_encoding_them_gathered(tmp_path: Path, layout) -> None:
    """Rows adjacent in memory are encoded where they lie, a run at a time; any other layout is
    gathered first: every codec's codes are those of the concatenated vectors either way."""
    rng = np.random.default_rng(7)
    sources = {
        "one run": lambda: _pieces(rng, [5, 9, 1, 30]),
        "three runs": lambda: [*_pieces(rng, [4, 6]), *_pieces(rng, [3]), *_pieces(rng, [8, 2])],
        "more runs than MAX_RUNS": lambda: [
            p for _ in range(MAX_RUNS + 1) for p in _pieces(rng, [2, 3])
        ],
        "copies": lambda: [p.copy() for p in _pieces(rng, [5, 9, 1])],
        "mixed dtypes": lambda: [*_pieces(rng, [4, 6]), *_pieces(rng, [3], np.float32)],
    }[layout]()
    files = TokenFiles.create(tmp_path / "tokens", DIM, ["float16", "int8", "binary"])
    encoded = files.encode([str(uuid.uuid4()) for _ in sources], sources)
    together = np.concatenate(sources)  # float32 where any source is
    for name in files.names:
        expected = files.codec(name).encode(together)
        np.testing.assert_array_equal(encoded.codes[name], expected)
    if layout == "one run":  # float16 codes are the rows themselves: nothing was copied
        assert np.shares_memory(encoded.codes["float16"], sources[0].base)
    files.close()


def _entry_codes(files: TokenFiles, name: str) -> list[np.ndarray]:
    snapshot = files.snapshot
    return [
        np.asarray(snapshot.codes[name][snapshot.offsets[r] : snapshot.offsets[r + 1]])
        for r in range(snapshot.size)
    ]


def test_codes_written_ahead_are_used_in_place_or_written_again(tmp_path: Path) -> None:
    """``begin(a, then=b)`` sends b's codes to disk past a's while the store is written; b's own
    write uses them, and a write that comes between (c) takes that place, so b writes again."""
    rng = np.random.default_rng(3)
    files = TokenFiles.create(tmp_path / "tokens", DIM, ["int8", "binary"])
    batches = {
        key: _pieces(rng, sizes) for key, sizes in {"a": [5, 7], "b": [4], "c": [9, 2]}.items()
    }
    encoded = {
        key: files.encode([str(uuid.uuid4()) for _ in vectors], vectors)
        for key, vectors in batches.items()
    }
    expected = {
        name: [files.codec(name).encode(v) for key in "acb" for v in batches[key]]
        for name in files.names
    }
    files.commit(files.begin(encoded["a"], [], then=encoded["b"]))
    files.commit(files.begin(encoded["c"], []))  # not the write announced: b's codes overwritten
    files.commit(files.begin(encoded["b"], []))
    for name in files.names:
        for got, want in zip(_entry_codes(files, name), expected[name], strict=True):
            np.testing.assert_array_equal(got, want)
    files.close()


def test_codes_written_ahead_of_a_write_that_never_came_are_cut_on_open(tmp_path: Path) -> None:
    """A process that dies after ``begin(a, then=b)`` left b's codes past the last entry (and no
    entry of b): the next open cuts them, and a's entries read back as written."""
    rng = np.random.default_rng(4)
    files = TokenFiles.create(tmp_path / "tokens", DIM, ["int8"])
    a, b = _pieces(rng, [6, 3]), _pieces(rng, [10])
    encoded_a = files.encode([str(uuid.uuid4()) for _ in a], a)
    encoded_b = files.encode([str(uuid.uuid4())], b)
    files.commit(files.begin(encoded_a, [], then=encoded_b))
    files.close()  # waits for b's codes to be on disk
    width = files.codec("int8").bytes_per_token
    assert os.path.getsize(tmp_path / "tokens" / "int8.codes") == 19 * width
    reopened = TokenFiles.open(tmp_path / "tokens", lookup=None)
    assert os.path.getsize(tmp_path / "tokens" / "int8.codes") == 9 * width
    assert reopened.snapshot.size == 2
    for got, vectors in zip(_entry_codes(reopened, "int8"), a, strict=True):
        np.testing.assert_array_equal(got, reopened.codec("int8").encode(vectors))
    reopened.close()


def test_a_write_undone_after_sending_the_next_ones_codes_ahead_moves_them(tmp_path: Path) -> None:
    """a's store write fails after b's codes went ahead past a's: a is settled away, so b lands
    where a was, and its codes are written there, not read from where they went ahead."""
    rng = np.random.default_rng(5)
    files = TokenFiles.create(tmp_path / "tokens", DIM, ["int8", "binary"])
    first = _pieces(rng, [3])
    files.commit(files.begin(files.encode([str(uuid.uuid4())], first), []))
    a, b = _pieces(rng, [4, 5]), _pieces(rng, [6, 2])
    encoded_a = files.encode([str(uuid.uuid4()) for _ in a], a)
    encoded_b = files.encode([str(uuid.uuid4()) for _ in b], b)
    files.begin(encoded_a, [], then=encoded_b)
    files.settle(lambda points: {})  # the store holds none of a's points: a is undone
    assert files.snapshot.size == 1
    files.commit(files.begin(encoded_b, []))
    for name in files.names:
        expected = [files.codec(name).encode(v) for v in [*first, *b]]
        for got, want in zip(_entry_codes(files, name), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    files.close()
