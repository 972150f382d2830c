"""Writes are safe: a process killed (SIGKILL) while adding leaves the index readable with every
document whole or absent, and searches that run during adds see whole documents only."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.retrieval.retrieval_samples import page_pdf
from uniembed.embedder import Embedder
from uniembed.retrieval.index import Hit, Index
from uniembed.testing.fake import FakeModel

WRITER = textwrap.dedent(
    """
    import sys
    from uniembed.embedder import Embedder
    from uniembed.retrieval.index import open_index
    from uniembed.testing.fake import FakeModel
    sys.path.insert(0, sys.argv[2])
    from tests.retrieval.retrieval_samples import page_pdf

    index = open_index(sys.argv[1], Embedder(FakeModel()))
    pdfs = {n: page_pdf([(0.2 * p, 0.5, 1 - 0.2 * p) for p in range(n)]) for n in (2, 3)}
    start = int(sys.argv[3])
    for i in range(start, start + 100000):
        pages = 2 + i % 2
        # replaces earlier rounds of the same ids: a different page count each time
        index.add([{"pdf": pdfs[pages]}, f"text number {i}"], [f"doc-{i % 7}", f"text-{i % 5}"],
                  [{"round": i}, {"round": i}])
        print(i, flush=True)
    """
)


def check_whole(hits: list[Hit]) -> Counter:
    """Every document among ``hits`` is complete and from one round; returns pages per document."""
    by_doc: dict[str, list[Hit]] = {}
    for hit in hits:
        by_doc.setdefault(hit.id, []).append(hit)
    for doc_id, entries in by_doc.items():
        rounds = {e.metadata["round"] for e in entries}
        assert len(rounds) == 1, f"{doc_id} mixes rounds {rounds}"
        if doc_id.startswith("doc-"):
            (round_,) = rounds
            assert sorted(e.page for e in entries) == list(range(1, 2 + round_ % 2 + 1)), doc_id
        else:
            assert len(entries) == 1
    return Counter(hit.id for hit in hits)


def all_entries(index: Index, mode: str = "dense") -> list[Hit]:
    return index.search("text number", k=100, mode=mode)


def test_killing_a_process_mid_add_leaves_whole_documents(tmp_path: Path) -> None:
    path = tmp_path / "index"
    samples = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    timing = random.Random(0)
    for kill in range(3):  # kill, reopen, check; the next writer goes on from there
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), samples, str(1000 * kill)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines = []
        while len(lines) < 3 + kill:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()
            lines.append(int(line))
        time.sleep(
            timing.uniform(0, 0.1)
        )  # somewhere in a later add: encoding, deleting or upserting
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        index = Index.open(path, Embedder(FakeModel()))
        hits = all_entries(index)
        counts = check_whole(hits)
        assert set(counts) <= {f"doc-{i}" for i in range(7)} | {f"text-{i}" for i in range(5)}
        assert len(hits) == index.count()
        # every add that returned is there (its round, or a later one that replaced it)
        done = lines[-1]
        assert index.get(f"doc-{done % 7}")[0].metadata["round"] >= done
        check_whole(all_entries(index, "multivector"))
        index.close()


def test_searches_during_adds_see_whole_documents(tmp_path: Path) -> None:
    index = Index.create(tmp_path / "index", Embedder(FakeModel()))
    pdfs = {n: page_pdf([(0.3, 0.1 * p, 0.9) for p in range(n)]) for n in (2, 3)}
    index.add(["text number 0"], ["text-0"], [{"round": 0}])
    index.search("warm", mode="multivector")  # the in-memory scan exists before the writes start

    def write() -> None:
        for i in range(1, 40):
            index.add(
                [{"pdf": pdfs[2 + i % 2]}, f"text number {i}"],
                [f"doc-{i % 7}", f"text-{i % 5}"],
                [{"round": i}, {"round": i}],
            )

    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(write)
        searches = 0
        while not writing.done():
            for mode in ("dense", "two-stage", "multivector", "binary"):
                check_whole(index.search("text number", k=100, mode=mode, candidates=100))
                searches += 1
        writing.result()  # the writer's errors, if any
    assert searches > 4
    assert check_whole(all_entries(index)) == check_whole(all_entries(index, "multivector"))
    index.close()
