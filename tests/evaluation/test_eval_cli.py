"""``uniembed eval retrieval`` and ``uniembed eval alignment`` end to end on a tiny real v4."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.evaluation.builders import identity_dataset, write_beir, write_pairs
from uniembed.cli import app

runner = CliRunner()


def test_eval_retrieval_writes_report_chart_and_runs(tiny_v4_path: Path, tmp_path: Path) -> None:
    data = write_beir(tmp_path / "beir", *identity_dataset(10))
    out = tmp_path / "report"
    args = [
        "eval",
        "retrieval",
        str(data),
        "-m",
        str(tiny_v4_path),
        "--task",
        "text-matching",
        "-s",
        "dense:all",
        "-s",
        "dense-int8",
        "--k",
        "1",
        "--k",
        "10",
        "-o",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--runs",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dense-int8:64" in result.output and "ndcg@10" in result.output
    assert "encoded 20 items" in result.output and "from the cache" not in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == {"queries": "text-matching", "corpus": "text-matching"}
    assert (
        report["settings"][4]["name"] == "dense:64"
        and report["settings"][4]["metrics"]["ndcg@10"] == 1.0
    )
    assert (out / "quality_vs_bytes.png").is_file() and len(list((out / "runs").iterdir())) == 6
    again = runner.invoke(app, [*args[:-1], "-s", "dense:8"])  # cached: a new setting only
    assert again.exit_code == 0, again.output
    assert "read 20 items (10 queries, 10 corpus) from the cache: no forward pass ran" in (
        again.output
    )
    assert (
        json.loads((out / "report.json").read_text())["encoding"]["corpus"]["chunks_from_cache"]
        == 1
    )


def test_eval_retrieval_reports_bad_input_clearly(tiny_v4_path: Path, tmp_path: Path) -> None:
    data = write_beir(tmp_path / "beir", *identity_dataset(3))
    result = runner.invoke(
        app,
        [
            "eval",
            "retrieval",
            str(data),
            "--split",
            "dev",
            "-m",
            str(tiny_v4_path),
            "--no-cache",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert (
        f"error: {data / 'qrels' / 'dev.tsv'}: no qrels for split 'dev' (found: test)"
        in result.output
    )
    bad = runner.invoke(
        app, ["eval", "retrieval", str(data), "-s", "dense:9999", "-m", str(tiny_v4_path)]
    )
    assert bad.exit_code == 2 and "dimensions must be between 1 and 64" in bad.output


def test_eval_alignment_prints_and_writes_json(tiny_v4_path: Path, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs", 4)
    out = tmp_path / "alignment.json"
    result = runner.invoke(
        app,
        ["eval", "alignment", str(pairs), "-m", str(tiny_v4_path), "-o", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["pairs"] == 4 and set(written) == {
        "pairs",
        "matching_cosine",
        "random_cosine",
        "modality_gap",
    }
    assert json.loads(result.stdout[result.stdout.index("{") :]) == written
