"""``uniembed embed --ray``: the bulk job on a pool of 2 Ray actors equals the local job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import uniembed
from tests.helpers import assert_same_output, pdf_bytes, png_bytes, read_output
from uniembed.bulk import BulkOptions, BulkReport, embed_files
from uniembed.distributed import ActorPool, ModelSpec, RayEncoder
from uniembed.errors import CheckpointError, InvalidInput

pytestmark = pytest.mark.slow  # a Ray cluster and model-loading actors: about a minute a file

OPTIONS = BulkOptions(task="retrieval.passage", batch_size=4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Texts (one empty: an error), two images and a two-page PDF: 27 records, 7 chunks of 4."""
    folder = tmp_path_factory.mktemp("corpus")
    lines = [f"line {i} about solar panels and wind {i % 5}" for i in range(24)]
    lines[5] = ""
    (folder / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "b.png").write_bytes(png_bytes((200, 10, 10)))
    (folder / "c.png").write_bytes(png_bytes((10, 10, 200), size=(30, 17)))
    (folder / "d.pdf").write_bytes(pdf_bytes([(0, 0, 255), (0, 255, 0)], (40, 30)))
    return folder


@pytest.fixture(scope="module")
def local_job(corpus: Path, tiny_v4_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("local") / "out.parquet"
    report = embed_files([corpus], output, uniembed.load(tiny_v4_path, device="cpu"), OPTIONS)
    assert report.finished and report.failed == 1
    return output


def ray_encoder(model: Path, **spec: Any) -> RayEncoder:
    return RayEncoder(
        ModelSpec(str(model), device="cpu", **spec), ActorPool(actors=2), address="auto"
    )


def test_two_actors_give_the_local_jobs_ids_vectors_and_errors(
    ray_cluster: Any, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.parquet"
    report = embed_files([corpus], output, ray_encoder(tiny_v4_path), OPTIONS)
    assert (report.finished, report.embedded, report.failed) == (True, 27, 1)
    assert_same_output(output, local_job)
    assert "b.png" in read_output(output)[0] and "d.pdf#page=2" in read_output(output)[0]
    errors = (tmp_path / "out.parquet.errors.jsonl").read_text(encoding="utf-8")
    assert '"id": "a.txt:6"' in errors and "empty text" in errors


def test_a_stopped_ray_job_resumes_to_the_local_result(
    ray_cluster: Any, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.parquet"
    chunks = 0

    def stop_half_way(records: int, tokens: int) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 3:
            raise KeyboardInterrupt

    first = BulkReport(output, tmp_path / "errors")
    with pytest.raises(KeyboardInterrupt):
        embed_files(
            [corpus],
            output,
            ray_encoder(tiny_v4_path),
            OPTIONS,
            on_progress=stop_half_way,
            report=first,
        )
    assert not first.finished and first.embedded == 11  # 3 chunks of 4, one of them the empty line
    second = embed_files([corpus], output, ray_encoder(tiny_v4_path), OPTIONS, resume=True)
    assert (second.finished, second.skipped, second.embedded) == (True, 11, 16)
    assert_same_output(output, local_job)


def test_options_the_model_refuses_stop_the_job_with_the_models_message(
    ray_cluster: Any, corpus: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    too_wide = BulkOptions(task="retrieval.passage", dimensions=4096)
    with pytest.raises(InvalidInput, match="dimensions"):
        embed_files([corpus], tmp_path / "out.jsonl", ray_encoder(tiny_v4_path), too_wide)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_model_the_actors_cannot_load_stops_the_job_with_its_message(
    ray_cluster: Any, corpus: Path, tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        embed_files([corpus], tmp_path / "out.jsonl", ray_encoder(tmp_path / "model"), OPTIONS)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_pool_the_cluster_cannot_hold_is_refused_before_any_actor_starts(
    ray_cluster: Any, corpus: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    encoder = RayEncoder(
        ModelSpec(str(tiny_v4_path)), ActorPool(actors=2, gpus_per_actor=1), address="auto"
    )
    with pytest.raises(InvalidInput, match="need 2 GPUs; the cluster has 0"):
        embed_files([corpus], tmp_path / "out.jsonl", encoder, OPTIONS)
    assert not (tmp_path / "out.jsonl").exists()


def test_the_embed_command_runs_on_ray(
    ray_cluster: Any, corpus: Path, local_job: Path, tiny_v4_path: Path, tmp_path: Path
) -> None:
    from uniembed.cli import app

    output = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        app,
        [
            "embed",
            str(corpus),
            "-o",
            str(output),
            "--model",
            str(tiny_v4_path),
            "--device",
            "cpu",
            "--task",
            "retrieval.passage",
            "--batch-size",
            "4",
            "--ray",
            "auto",
            "--ray-actors",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "embedded 27 items" in result.output and "1 items failed" in result.output
    assert_same_output(output, local_job)


def test_pool_sizes_are_checked() -> None:
    with pytest.raises(InvalidInput, match="at least 1 actor"):
        ActorPool(actors=0)
