"""Adapter folders and official-layout snapshots without training: symmetric tasks, instructions,
replacing a task, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import uniembed
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.registry import load_model
from uniembed.training.export import export_snapshot, save_adapter

TEXTS = ["hello world", "solar panels"]


def adapter(
    base: Path, folder: Path, *, symmetric: bool, init_from: str | None = None, prompts=None
) -> Path:
    model = load_model(base, device="cpu")
    model.add_task("mine", symmetric=symmetric, init_from=init_from, prompts=prompts, seed=3)
    with torch.no_grad():
        for parameter in model.task_parameters("mine"):
            parameter.add_(0.01)
    return save_adapter(model, "mine", folder, base_model=str(base), symmetric=symmetric)


def test_a_symmetric_v4_task_keeps_one_api_name_through_export(
    tiny_v4_path: Path, tmp_path: Path
) -> None:
    folder = adapter(tiny_v4_path, tmp_path / "adapter", symmetric=True)
    settings = json.loads((folder / "uniembed_adapter.json").read_text())
    assert settings["prompts"] == {"query": "Query: "} and settings["api_task_names"] == ["mine"]
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4  # PEFT's LoraConfig
    snapshot = export_snapshot(tiny_v4_path, folder, tmp_path / "snapshot")
    config = json.loads((snapshot / "config.json").read_text())
    assert config["symmetric_task_names"] == ["mine"]
    exported = uniembed.load(snapshot, device="cpu")
    served = uniembed.load(tiny_v4_path, device="cpu", adapters={"mine": folder})
    assert "mine" in exported.info.tasks and "mine.query" not in exported.info.tasks
    for a, b in zip(
        exported.encode(TEXTS, task="mine").embeddings, served.encode(TEXTS, task="mine").embeddings
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # the official form: a symmetric task always takes the query prefix, as text-matching does
    passage = exported.encode_text(TEXTS, task="mine", prompt_name="passage")
    torch.testing.assert_close(passage[0], exported.encode(TEXTS, task="mine").embeddings[0])


def test_v3_instructions_travel_with_the_adapter(tiny_v3_path: Path, tmp_path: Path) -> None:
    inherited = adapter(
        tiny_v3_path, tmp_path / "inherited", symmetric=False, init_from="retrieval"
    )
    settings = json.loads((inherited / "uniembed_adapter.json").read_text())
    assert settings["prompts"]["query"].startswith("Represent the query")
    chosen = adapter(
        tiny_v3_path, tmp_path / "chosen", symmetric=True, prompts={"mine": "Classify: "}
    )
    snapshot = export_snapshot(tiny_v3_path, chosen, tmp_path / "snapshot", name="labels")
    config = json.loads((snapshot / "config.json").read_text())
    assert (
        config["lora_adaptations"][-1] == "labels"
        and config["task_instructions"]["labels"] == "Classify: "
    )
    model = uniembed.load(snapshot, device="cpu")
    served = uniembed.load(tiny_v3_path, device="cpu", adapters={"labels": chosen})
    assert (
        model._model.resolve_task("labels").prefix
        == served._model.resolve_task("labels").prefix
        == "Classify: "
    )
    for a, b in zip(
        model.encode(TEXTS, task="labels").embeddings,
        served.encode(TEXTS, task="labels").embeddings,
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_replacing_an_official_v3_task_in_the_snapshot(tiny_v3_path: Path, tmp_path: Path) -> None:
    model = load_model(tiny_v3_path, device="cpu")
    model.add_task("retrieval", init_from="retrieval", replace=True)
    with torch.no_grad():
        for parameter in model.task_parameters("retrieval"):
            parameter.mul_(1.5)
    folder = save_adapter(
        model, "retrieval", tmp_path / "adapter", base_model=str(tiny_v3_path), symmetric=False
    )
    with pytest.raises(InvalidInput, match="already has a task 'retrieval.query'"):
        export_snapshot(tiny_v3_path, folder, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    snapshot = export_snapshot(tiny_v3_path, folder, tmp_path / "snapshot", replace_task=True)
    config = json.loads((snapshot / "config.json").read_text())
    assert config["lora_adaptations"] == [
        "retrieval.query",
        "retrieval.passage",
        "separation",
        "classification",
        "text-matching",
    ]
    exported = (
        uniembed.load(snapshot, device="cpu").encode(TEXTS, task="retrieval.passage").embeddings
    )
    from uniembed.embedder import Embedder

    trained = Embedder(model).encode(TEXTS, task="retrieval.passage").embeddings
    for a, b in zip(exported, trained):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_an_adapter_of_the_other_family_or_shape_is_refused(
    tiny_v4_path: Path, tiny_v3_path: Path, tmp_path
) -> None:
    v3_folder = adapter(tiny_v3_path, tmp_path / "v3", symmetric=True)
    with pytest.raises(CheckpointError, match="holds a jina-embeddings-v3 adapter"):
        uniembed.load(tiny_v4_path, device="cpu", adapters={"x": v3_folder})
    with pytest.raises(InvalidInput, match="holds a jina-embeddings-v3 adapter"):
        export_snapshot(tiny_v4_path, v3_folder, tmp_path / "out")
    from uniembed.testing.jina_v3 import write_tiny_jina_v3

    wider = write_tiny_jina_v3(tmp_path / "wider", hidden_size=48, num_heads=4)
    with pytest.raises(CheckpointError, match="has shape"):
        uniembed.load(wider, device="cpu", adapters={"x": v3_folder})
    (v3_folder / "uniembed_adapter.json").write_text('{"format": 9}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="unknown format 9"):
        uniembed.load(tiny_v3_path, device="cpu", adapters={"x": v3_folder})
    with pytest.raises(CheckpointError, match="adapter folder not found"):
        uniembed.load(tiny_v3_path, device="cpu", adapters={"x": tmp_path / "none"})
