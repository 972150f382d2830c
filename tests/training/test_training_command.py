"""``uniembed train`` and ``uniembed serve --adapter``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import torch
from typer.testing import CliRunner

import uniembed
from uniembed import cli
from uniembed.cli import serve as serve_cli
from uniembed.models.registry import load_model
from uniembed.testing.live import ServeProcess
from uniembed.training.export import save_adapter

runner = CliRunner()


def test_train_from_the_command_line(tiny_v3_path: Path, domain_files, tmp_path: Path) -> None:
    data, held_out = domain_files
    args = [
        "train",
        "--model",
        str(tiny_v3_path),
        "--data",
        str(data),
        "--eval",
        str(held_out),
        "--task",
        "dom",
        "--output",
        str(tmp_path / "run"),
        "--max-steps",
        "4",
        "--eval-steps",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "5e-3",
        "--mini-batch-size",
        "4",
        "--no-progress",
    ]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "evaluation (start → best" in result.output and "--adapter dom=" in result.output
    assert "never improved" not in result.output
    model = uniembed.load(tiny_v3_path, adapters={"dom": tmp_path / "run" / "adapter"})
    assert "dom.query" in model.info.tasks


def test_bad_data_exits_with_the_line(tiny_v3_path: Path, tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(
        '{"query": "q", "positive": "p"}\n{"query": "q"}\n', encoding="utf-8"
    )
    result = runner.invoke(
        cli.app,
        [
            "train",
            "--model",
            str(tiny_v3_path),
            "--data",
            str(tmp_path / "d.jsonl"),
            "--task",
            "dom",
            "--output",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'd.jsonl'}:2: missing field 'positive'" in result.output
    result = runner.invoke(
        cli.app,
        [
            "train",
            "--model",
            str(tiny_v3_path),
            "--data",
            str(tmp_path / "d.jsonl"),
            "--task",
            "dom",
            "--output",
            str(tmp_path / "run"),
            "--loss",
            "nope",
        ],
    )
    assert result.exit_code == 1 and "loss must be one of" in result.output


def test_serve_adapter_flags_build_the_settings(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(serve_cli, "run_server", seen.append)
    result = runner.invoke(cli.app, ["serve", "--adapter", "a=/x/a", "--adapter", "b=/y"])
    assert result.exit_code == 0, result.output
    assert seen[0].adapters == (("a", "/x/a"), ("b", "/y"))
    result = runner.invoke(cli.app, ["serve"], env={"UNIEMBED_ADAPTERS": "a=/x b=/y"})
    assert seen[1].adapters == (("a", "/x"), ("b", "/y"))
    for bad, message in (("nodir", "NAME=DIR"), ("a=/x a=/y", "given twice")):
        result = runner.invoke(cli.app, ["serve", *[f"--adapter={v}" for v in bad.split()]])
        assert result.exit_code == 1 and message in result.output


def test_uniembed_serve_serves_an_adapter_beside_the_official_tasks(
    tiny_v4_path: Path, tmp_path: Path
) -> None:
    """The real command in its own process: the added task answers under its API names."""
    model = load_model(tiny_v4_path, device="cpu")
    model.add_task("dom", seed=1)
    with torch.no_grad():
        for parameter in model.task_parameters("dom"):
            parameter.add_(0.02)
    folder = save_adapter(
        model, "dom", tmp_path / "adapter", base_model=str(tiny_v4_path), symmetric=False
    )
    server = ServeProcess(
        "--model", str(tiny_v4_path), "--adapter", f"my-domain={folder}", log=subprocess.PIPE
    )
    try:
        url = f"{server.url}/v1/embeddings"
        expected = uniembed.load(tiny_v4_path, adapters={"my-domain": folder})
        for task in ("my-domain.query", "my-domain.passage", "retrieval.query"):
            reply = httpx.post(url, json={"input": ["hello world"], "task": task}, timeout=60)
            assert reply.status_code == 200, reply.text
            want = expected.encode(["hello world"], task=task).embeddings[0].numpy()
            np.testing.assert_allclose(
                np.asarray(reply.json()["data"][0]["embedding"], np.float32), want, atol=1e-5
            )
        models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        assert "my-domain.passage" in str(models)
    finally:
        server.stop()


def test_train_is_listed_and_documents_its_flags() -> None:
    assert "train" in runner.invoke(cli.app, ["--help"], env={"COLUMNS": "200"}).output
    text = runner.invoke(cli.app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for flag in (
        "--mini-batch-size",
        "--gradient-checkpointing",
        "--resume",
        "--export-snapshot",
        "--init-from",
    ):
        assert flag in text


def test_a_run_whose_evaluation_never_improves_says_so(
    tiny_v3_path: Path, domain_files, tmp_path: Path
) -> None:
    data, held_out = domain_files
    args = ["train", "-m", str(tiny_v3_path), "-d", str(data), "--eval", str(held_out)]
    args += ["--task", "dom", "-o", str(tmp_path / "run"), "--max-steps", "2", "--eval-steps", "1"]
    args += ["--batch-size", "4", "--lr", "1e-30", "--no-progress", "--dtype", "float32"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "warning: the evaluation never improved on the start" in flat
    assert "at step 0" in flat and "which no checkpoint holds" in flat
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["metrics"]["best"]["step"] == 0 and record["config"]["dtype"] == "float32"
    checkpoint = Path(record["best_checkpoint"]).name  # the Trainer's best after the start
    assert f"the adapter written is the best later checkpoint's ({checkpoint})" in flat
