"""Training end to end on the tiny checkpoints: the domain is learnt, the result reloads exactly in
a fresh process, the official tasks stay untouched, runs are reproducible and resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import uniembed
from uniembed.errors import InvalidInput
from uniembed.training import TrainConfig, TrainResult, export_snapshot, train
from uniembed.training.data import read_eval_data
from uniembed.training.evaluate import evaluate

TEXTS = ["nopqr stuvw", "abcde fghij klm", "xyz", "some unrelated words of text"]
V4_OFFICIAL = (
    "retrieval.query",
    "retrieval.passage",
    "text-matching",
    "code.query",
    "code.passage",
)
V3_OFFICIAL = (
    "retrieval.query",
    "retrieval.passage",
    "separation",
    "classification",
    "text-matching",
)
MIN_GAIN = 0.15  # nDCG@10 over the starting adapter; measured ~0.4 (v4) and ~0.23 (v3) at 100 steps


def settings(model: Path, data: Path, output: Path, **overrides) -> TrainConfig:
    values = {
        "model": str(model),
        "data": data,
        "output": output,
        "task": "dom",
        "batch_size": 16,
        "learning_rate": 5e-3,
        "max_steps": 100,
        "eval_steps": 50,
        "progress": False,
        "logging_steps": 50,
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module", params=["v4", "v3"])
def trained(
    request, tiny_v4_path, tiny_v3_path, domain_files, tmp_path_factory
) -> tuple[str, Path, TrainResult]:
    torch.set_num_threads(1)  # module-scoped: the autouse fixture has not run yet
    base = tiny_v4_path if request.param == "v4" else tiny_v3_path
    data, held_out = domain_files
    output = tmp_path_factory.mktemp(f"train-{request.param}")
    return request.param, base, train(settings(base, data, output / "run", eval_data=held_out))


def encode_all(embedder, tasks) -> dict[str, list[torch.Tensor]]:
    multi = embedder.info.multivector_dim is not None
    out = {}
    for task in tasks:
        result = embedder.encode(TEXTS, task=task, output="both" if multi else "single")
        out[task] = result.embeddings + (result.multivectors if multi else [])
    return out


def test_training_raises_held_out_ndcg(trained, domain_files) -> None:
    _, base, result = trained
    start, best = result.metrics["start"], result.metrics["best"]
    assert start["step"] == 0 and best["ndcg@10"] - start["ndcg@10"] >= MIN_GAIN, result.metrics
    # the saved adapter is the best checkpoint: served from the folder, it scores what training
    # logged
    served = uniembed.load(base, device="cpu", adapters={"dom": result.adapter})
    held_out = read_eval_data(domain_files[1])
    tasks = {"query": "dom.query", "passage": "dom.passage"}
    assert evaluate(served, held_out, tasks, 512)["ndcg@10"] == pytest.approx(
        best["ndcg@10"], abs=1e-6
    )
    record = json.loads((result.adapter.parent / "training.json").read_text())
    assert record["steps"] == 100 and record["plan"]["api_task_names"] == [
        "dom.passage",
        "dom.query",
    ]


def test_the_adapter_reloads_in_a_fresh_process_with_the_same_embeddings(
    trained, tmp_path: Path
) -> None:
    family, base, result = trained
    assert_fresh_process_reload(base, result, tmp_path, multi=family == "v4")


def assert_fresh_process_reload(
    base: Path, result: TrainResult, tmp_path: Path, multi: bool
) -> None:
    script = textwrap.dedent(f"""
        import torch, uniembed
        torch.set_num_threads(1)
        model = uniembed.load(
            {str(base)!r}, device="cpu", adapters={{"dom": {str(result.adapter)!r}}}
        )
        multi = model.info.multivector_dim is not None
        out = {{}}
        for task in ("dom.query", "dom.passage"):
            r = model.encode({TEXTS!r}, task=task, output="both" if multi else "single")
            out[task] = r.embeddings + (r.multivectors if multi else [])
        torch.save(out, {str(tmp_path / "out.pt")!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(uniembed.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    reloaded = torch.load(tmp_path / "out.pt")
    in_memory = encode_all(result.embedder, ("dom.query", "dom.passage"))
    for task, vectors in in_memory.items():
        assert len(vectors) == len(reloaded[task]) == len(TEXTS) * (2 if multi else 1)
        for mine, theirs in zip(vectors, reloaded[task]):
            torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_mid_v4_learns_the_domain_and_reloads_exactly(domain_files, tmp_path: Path) -> None:
    """The mid checkpoint (hidden 512, 6 layers, r=16): ~3 minutes on 2 CPU cores."""
    from uniembed.testing.jina_v4 import MID, write_tiny_jina_v4

    base = write_tiny_jina_v4(tmp_path / "mid", size=MID)
    data, held_out = domain_files
    result = train(
        settings(
            base,
            data,
            tmp_path / "run",
            eval_data=held_out,
            max_steps=30,
            eval_steps=30,
            learning_rate=2e-3,
        )
    )
    start, best = result.metrics["start"], result.metrics["best"]
    assert best["ndcg@10"] - start["ndcg@10"] >= 0.2, result.metrics  # measured 0.14 -> 0.65
    assert_fresh_process_reload(base, result, tmp_path, multi=True)
    fresh = encode_all(uniembed.load(base, device="cpu"), V4_OFFICIAL)
    after = encode_all(result.embedder, V4_OFFICIAL)
    assert all(torch.equal(a, b) for task in V4_OFFICIAL for a, b in zip(after[task], fresh[task]))


def test_official_tasks_are_unchanged_after_training(trained) -> None:
    family, base, result = trained
    official = V4_OFFICIAL if family == "v4" else V3_OFFICIAL
    fresh = encode_all(uniembed.load(base, device="cpu"), official)
    after = encode_all(result.embedder, official)
    for task in official:
        assert all(torch.equal(a, b) for a, b in zip(after[task], fresh[task])), task


def test_the_exported_snapshot_loads_with_the_task_in_the_official_layout(
    trained, tmp_path: Path
) -> None:
    family, base, result = trained
    snapshot = export_snapshot(base, result.adapter, tmp_path / "snapshot")
    config = json.loads((snapshot / "config.json").read_text())
    if family == "v4":
        assert config["task_names"] == ["retrieval", "text-matching", "code", "dom"]
        keys = load_file(snapshot / "adapters" / "adapter_model.safetensors").keys()
        assert (
            "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.dom.weight" in keys
        )
        assert "base_model.model.multi_vector_projector.lora_A.dom.weight" in keys
        assert (snapshot / "adapters" / "adapter_config.json").read_bytes() == (
            base / "adapters" / "adapter_config.json"
        ).read_bytes()
    else:
        assert config["lora_adaptations"][-2:] == ["dom.query", "dom.passage"]
        assert config["task_instructions"]["dom.query"] == ""  # a fresh task has no instruction
        stacked = load_file(snapshot / "model.safetensors")[
            "roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight.0.lora_A"
        ]
        assert stacked.shape[0] == 7
    loaded = uniembed.load(snapshot, device="cpu")
    exported = encode_all(loaded, ("dom.query", "dom.passage"))
    for task, vectors in encode_all(result.embedder, ("dom.query", "dom.passage")).items():
        for mine, theirs in zip(vectors, exported[task]):
            torch.testing.assert_close(theirs, mine, atol=1e-6, rtol=0)
    official = V4_OFFICIAL if family == "v4" else V3_OFFICIAL
    before, after = (
        encode_all(uniembed.load(base, device="cpu"), official),
        encode_all(loaded, official),
    )
    assert all(torch.equal(a, b) for task in official for a, b in zip(after[task], before[task]))
    with pytest.raises(InvalidInput, match="exists"):
        export_snapshot(base, result.adapter, tmp_path / "snapshot")
    with pytest.raises(InvalidInput, match="already has a task 'dom"):
        export_snapshot(snapshot, result.adapter, tmp_path / "again")


def test_a_served_adapter_name_must_not_clash(trained) -> None:
    _, base, result = trained
    with pytest.raises(InvalidInput, match="exists"):
        uniembed.load(base, device="cpu", adapters={"text-matching": result.adapter})
    renamed = uniembed.load(base, device="cpu", adapters={"other": result.adapter})
    torch.testing.assert_close(
        renamed.encode(TEXTS, task="other.query").embeddings[0],
        result.embedder.encode(TEXTS, task="dom.query").embeddings[0],
        atol=1e-6,
        rtol=0,
    )


# ----------------------------------------------------------------------- reproducibility and resume
def short(base: Path, data: Path, output: Path, **overrides) -> TrainConfig:
    return settings(
        base, data, output, **{"max_steps": 6, "save_steps": 3, "logging_steps": 3, **overrides}
    )


def factors(result: TrainResult) -> dict[str, torch.Tensor]:
    return load_file(result.adapter / "adapter_model.safetensors")


class StopAt:
    """A TrainerCallback that interrupts training after a step (with a checkpoint), like a kill."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __getattr__(self, name: str):  # every other callback event does nothing
        return lambda *args, **kwargs: None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


@pytest.mark.parametrize("family", ["v4", "v3"])
def test_same_seed_same_adapter_and_resume_equals_an_uninterrupted_run(
    family, tiny_v4_path, tiny_v3_path, domain_files, tmp_path: Path
) -> None:
    base = tiny_v4_path if family == "v4" else tiny_v3_path
    data = domain_files[0]
    first = factors(train(short(base, data, tmp_path / "a")))
    second = factors(train(short(base, data, tmp_path / "b")))
    assert all(torch.equal(first[k], second[k]) for k in first)
    interrupted = train(short(base, data, tmp_path / "c"), callbacks=[StopAt(3)])
    assert interrupted.steps == 3
    halfway = factors(interrupted)
    assert any(not torch.equal(first[k], halfway[k]) for k in first)
    resumed = factors(train(short(base, data, tmp_path / "c", resume=True)))
    for key in first:
        torch.testing.assert_close(resumed[key], first[key], atol=0, rtol=0)


def test_cached_mini_batches_and_checkpointing_train_like_the_plain_loop(
    tiny_v4_path, domain_files, tmp_path
) -> None:
    data = domain_files[0]
    plain = factors(train(short(tiny_v4_path, data, tmp_path / "plain")))
    cached = factors(
        train(
            short(
                tiny_v4_path,
                data,
                tmp_path / "cached",
                mini_batch_size=5,
                gradient_checkpointing=True,
            )
        )
    )
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], atol=2e-5, rtol=1e-4)
    # with gradient accumulation the cached step scales its loss as the Trainer scales a plain one
    accumulate = {"batch_size": 8, "gradient_accumulation": 2, "max_steps": 2}
    plain = factors(train(short(tiny_v4_path, data, tmp_path / "plain-acc", **accumulate)))
    cached = factors(
        train(short(tiny_v4_path, data, tmp_path / "cached-acc", mini_batch_size=3, **accumulate))
    )
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------- checks before training
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "retrieval"}, "task 'retrieval' exists .* --overwrite"),
        ({"task": "my.task"}, "invalid task name"),
        ({"init_from": "nope"}, "--init-from 'nope' is not a task"),
        ({"loss": "cosent"}, "loss 'cosent' needs graded pairs"),
    ],
)
def test_bad_settings_fail_before_any_step(
    overrides, message, tiny_v3_path, domain_files, tmp_path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        train(settings(tiny_v3_path, domain_files[0], tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()  # nothing written


def test_images_for_a_text_model_and_bad_lines_fail_before_any_step(tiny_v3_path, tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(
        '{"query": "q", "positive": {"image": "a.png"}}\n', encoding="utf-8"
    )
    with pytest.raises(InvalidInput, match=r"d\.jsonl:1: an image item, but .* embeds text only"):
        train(settings(tiny_v3_path, tmp_path / "d.jsonl", tmp_path / "run"))
    (tmp_path / "e.jsonl").write_text(
        '{"query": "q", "positive": "p"}\n{"query": "q"}\n', encoding="utf-8"
    )
    with pytest.raises(InvalidInput, match=r"e\.jsonl:2: missing field 'positive'"):
        train(settings(tiny_v3_path, tmp_path / "e.jsonl", tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written


def test_an_earlier_run_is_resumed_or_refused(tiny_v3_path, domain_files, tmp_path) -> None:
    train(short(tiny_v3_path, domain_files[0], tmp_path / "run", max_steps=3))
    with pytest.raises(InvalidInput, match="checkpoints of an earlier run"):
        train(short(tiny_v3_path, domain_files[0], tmp_path / "run", max_steps=3))
    with pytest.raises(InvalidInput, match=r"other settings \(learning_rate\)"):
        train(
            short(
                tiny_v3_path,
                domain_files[0],
                tmp_path / "run",
                max_steps=3,
                learning_rate=1e-3,
                resume=True,
            )
        )
    with pytest.raises(InvalidInput, match="nothing to resume"):
        train(short(tiny_v3_path, domain_files[0], tmp_path / "new", resume=True))


def test_continuing_an_official_task_replaces_it_on_export(
    tiny_v4_path, domain_files, tmp_path
) -> None:
    result = train(
        short(
            tiny_v4_path,
            domain_files[0],
            tmp_path / "run",
            task="retrieval",
            overwrite=True,
            max_steps=2,
            export_snapshot=True,
        )
    )
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["plan"]["init_from"] == "retrieval" and record["plan"]["symmetric"] is False
    config = json.loads((result.snapshot / "config.json").read_text())
    assert config["task_names"] == ["retrieval", "text-matching", "code"]
    exported = (
        uniembed.load(result.snapshot, device="cpu")
        .encode(TEXTS, task="retrieval.query")
        .embeddings
    )
    trained_now = result.embedder.encode(TEXTS, task="retrieval.query").embeddings
    original = (
        uniembed.load(tiny_v4_path, device="cpu").encode(TEXTS, task="retrieval.query").embeddings
    )
    for mine, theirs, before in zip(trained_now, exported, original):
        torch.testing.assert_close(theirs, mine, atol=1e-6, rtol=0)
        assert not torch.allclose(mine, before, atol=1e-6)


def test_the_v4_adapter_folder_is_a_peft_adapter_of_the_official_model(trained) -> None:
    """Independent formulation: PEFT loads the folder onto transformers' own Qwen2.5-VL (the
    official model's module tree: ``model`` + ``multi_vector_projector``) and embeds like the
    resident routing."""
    family, base, result = trained
    if family != "v4":
        pytest.skip("v3 adapters are stored as the official parametrizations, not as PEFT")
    from peft import PeftModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    official = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    weights = {
        k: v.float() for f in base.glob("model-*.safetensors") for k, v in load_file(f).items()
    }
    official.multi_vector_projector = torch.nn.Linear(
        weights["multi_vector_projector.weight"].shape[1], 128
    )
    official.multi_vector_projector.load_state_dict(
        {
            "weight": weights["multi_vector_projector.weight"],
            "bias": weights["multi_vector_projector.bias"],
        }
    )
    peft_model = PeftModel.from_pretrained(official, str(result.adapter), adapter_name="dom").eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    ours = result.embedder.encode(TEXTS, task="dom.passage", output="both")
    for text, single, multi in zip(TEXTS, ours.embeddings, ours.multivectors):
        batch = tokenizer([f"Passage: {text}"], return_tensors="pt")
        with torch.no_grad():
            hidden = peft_model.base_model.model.model(**batch, use_cache=False).last_hidden_state[
                0
            ]
            projected = peft_model.base_model.model.multi_vector_projector(hidden)
        torch.testing.assert_close(
            single, torch.nn.functional.normalize(hidden.mean(0), dim=-1), atol=2e-5, rtol=0
        )
        torch.testing.assert_close(
            multi, torch.nn.functional.normalize(projected, dim=-1), atol=2e-5, rtol=0
        )
