"""``uniembed embed --ray`` on two Ray nodes: the actors are spread over both, and a node lost in
the middle of the job costs a restart, not a result: the output is the local job's, byte for byte,
with every id once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import uniembed
from tests.distributed.clusters import TwoNodes, two_node_cluster
from tests.helpers import assert_same_output, png_bytes, read_output
from uniembed.bulk import BulkOptions, embed_files
from uniembed.distributed import ActorPool, ModelSpec, RayEncoder
from uniembed.distributed.bulk import RESTARTS
from uniembed.errors import BatchFailed

pytestmark = pytest.mark.slow  # two Ray nodes and model-loading actors: about a minute a test

# multi-vectors of ~60-token texts: a chunk's result (> 100 KB) lives in the object store of the
# node that made it, so losing that node loses finished results too, not only running ones
OPTIONS = BulkOptions(task="retrieval.passage", vectors="multi", batch_size=4)
ACTOR = "_ChunkEmbedder"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 texts (one repeated id: an error) and an image: 16 chunks of 4 records."""
    folder = tmp_path_factory.mktemp("corpus")
    words = ["solar", "wind", "panel", "roof", "grid", "battery", "storage", "inverter"]
    lines = [
        f'{{"id": "t{i}", "text": "{" ".join(words[(i + j) % 8] for j in range(50))}"}}'
        for i in range(60)
    ]
    lines[17] = lines[17].replace('"t17"', '"t3"')
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "b.png").write_bytes(png_bytes((200, 10, 10)))
    return folder


@pytest.fixture(scope="module")
def local_job(corpus: Path, tiny_v4_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("local") / "out.parquet"
    report = embed_files([corpus], output, uniembed.load(tiny_v4_path, device="cpu"), OPTIONS)
    assert (report.finished, report.embedded, report.failed) == (True, 60, 1)
    return output


@pytest.fixture
def nodes() -> Iterator[TwoNodes]:
    yield from two_node_cluster()


def encoder(model: Path) -> RayEncoder:
    return RayEncoder(ModelSpec(str(model), device="cpu"), ActorPool(actors=2), address="auto")


def assert_every_id_once(output: Path, local: Path) -> None:
    ids = read_output(output)[0]
    assert len(ids) == len(set(ids)) == 60
    assert_same_output(output, local)


def test_the_actors_run_on_both_nodes(
    nodes: TwoNodes, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    placements: list[list[str]] = []
    output = tmp_path / "out.parquet"
    report = embed_files(
        [corpus],
        output,
        encoder(tiny_v4_path),
        OPTIONS,
        on_progress=lambda *_: placements.append(nodes.actor_nodes(ACTOR)),
    )
    assert report.finished and report.failed == 1
    assert sorted([nodes.head_id, nodes.worker_id]) in placements  # one actor on each node
    assert_every_id_once(output, local_job)
    assert nodes.actor_nodes(ACTOR) == []  # the job's actors end with it


def test_a_node_lost_mid_job_costs_a_restart_not_a_result(
    nodes: TwoNodes, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    chunks = 0

    def lose_the_worker(records: int, tokens: int) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:  # 2 written, up to 4 in flight, half of them on the worker
            assert nodes.worker_id in nodes.actor_nodes(ACTOR)
            nodes.remove_worker()

    output = tmp_path / "out.parquet"
    report = embed_files(
        [corpus], output, encoder(tiny_v4_path), OPTIONS, on_progress=lose_the_worker
    )
    assert (report.finished, report.embedded, report.failed) == (True, 60, 1)
    assert nodes.restarts(ACTOR) == 1  # the worker's actor, started again on the head node
    assert_every_id_once(output, local_job)
    errors = (tmp_path / "out.parquet.errors.jsonl").read_text(encoding="utf-8")
    assert errors.count("\n") == 1 and '"id": "t3"' in errors and "duplicate id" in errors


def test_actors_that_keep_crashing_stop_the_job_clearly_and_it_resumes(
    nodes: TwoNodes, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    killed: set[int] = set()

    def crash_past_the_restarts(records: int, tokens: int) -> None:
        for _ in range(0 if killed else RESTARTS + 1):  # each time both are back, kill both
            deadline = time.monotonic() + 90
            while len(pids := nodes.actor_pids(ACTOR) - killed) < 2:
                assert time.monotonic() < deadline, "the crashed actors were not restarted"
                time.sleep(0.2)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)  # processes this test's job started, by id
            killed.update(pids)

    output = tmp_path / "out.parquet"
    with pytest.raises(BatchFailed, match="past 3 restarts .* rerun the command with --resume"):
        embed_files(
            [corpus], output, encoder(tiny_v4_path), OPTIONS, on_progress=crash_past_the_restarts
        )
    assert nodes.restarts(ACTOR) == 2 * RESTARTS
    resumed = embed_files([corpus], output, encoder(tiny_v4_path), OPTIONS, resume=True)
    assert resumed.finished and resumed.skipped > 0 and resumed.embedded == 60 - resumed.skipped
    assert_every_id_once(output, local_job)
