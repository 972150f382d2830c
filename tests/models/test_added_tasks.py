"""Tasks added at run time (trained or loaded adapters) beside the official ones, and the
differentiable forward that training uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.base import Row
from uniembed.models.lora import NO_ADAPTER
from uniembed.models.registry import load_model

TEXTS = [
    "how do solar panels work",
    "a b c",
    "Photovoltaic cells turn sunlight into electricity. " * 2,
]
V4_API = ("retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage")
V3_API = ("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching")


@pytest.fixture(params=["v4", "v3"])
def family(request: pytest.FixtureRequest, tiny_v4_path: Path, tiny_v3_path: Path):
    """A fresh model per test (adding a task changes it), with its official API task names."""
    path, names = (tiny_v4_path, V4_API) if request.param == "v4" else (tiny_v3_path, V3_API)
    return load_model(path, device="cpu"), names


def rows(model, task: str, texts=TEXTS, multivector: bool = False) -> list[Row]:
    spec = model.resolve_task(task)
    made = [model.text_sequence(model.tokenize(spec.prefix + t).ids, spec) for t in texts]
    for row in made:
        row.multivector = multivector
    return made


def embed(model, task: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    multi = model.info.multivector_dim is not None
    return [(o.pooled, o.multivector) for o in model.forward(rows(model, task, multivector=multi))]


def assert_identical(a, b) -> None:
    for (pa, ma), (pb, mb) in zip(a, b):
        assert torch.equal(pa, pb)
        assert (ma is None and mb is None) or torch.equal(ma, mb)


def test_official_tasks_are_bit_identical_after_adding_tasks(family) -> None:
    model, names = family
    before = {task: embed(model, task) for task in names}
    model.add_task("fresh", seed=3)
    model.add_task("copied", init_from="text-matching", symmetric=True)
    model.add_task("loaded", factors=model.task_factors("fresh"))
    for task in names:
        assert_identical(embed(model, task), before[task])
    assert model.info.tasks[: len(names)] == names
    assert model.info.tasks[len(names) :] == (
        "fresh.query",
        "fresh.passage",
        "copied",
        "loaded.query",
        "loaded.passage",
    )


def test_a_fresh_task_starts_as_the_base_weights(family) -> None:
    """PEFT's initialisation (one factor zero) makes the new adapter's delta exactly zero."""
    model, _ = family
    model.add_task("fresh", seed=1, symmetric=True)
    with_fresh = rows(model, "fresh")
    base = rows(model, "fresh")
    for row in base:
        row.adapter = NO_ADAPTER
    for a, b in zip(model.forward(with_fresh), model.forward(base)):
        torch.testing.assert_close(a.pooled, b.pooled, atol=1e-6, rtol=0)


def test_a_task_initialised_from_another_embeds_like_it(family) -> None:
    model, _ = family
    model.add_task("mine", init_from="retrieval")
    for side in ("query", "passage"):
        assert (
            model.resolve_task(f"mine.{side}").prefix
            == model.resolve_task(f"retrieval.{side}").prefix
        )
        assert_identical(embed(model, f"mine.{side}"), embed(model, f"retrieval.{side}"))


def test_task_factors_round_trip_into_another_model(
    family, tiny_v4_path: Path, tiny_v3_path: Path
) -> None:
    model, _ = family
    model.add_task(
        "mine",
        init_from="code" if model.info.family.endswith("v4") else "classification",
        symmetric=True,
        seed=5,
    )
    with torch.no_grad():  # make it differ from its source
        for parameter in model.task_parameters("mine"):
            parameter.add_(0.01)
    path = tiny_v4_path if model.info.family.endswith("v4") else tiny_v3_path
    other = load_model(path, device="cpu")
    other.add_task("mine", symmetric=True, factors=model.task_factors("mine"))
    assert_identical(embed(other, "mine"), embed(model, "mine"))


def test_v3_tasks_keep_the_official_fused_layout_and_tie_qkv(tiny_v3_path: Path) -> None:
    model = load_model(tiny_v3_path, device="cpu")
    model.add_task("mine", seed=2)
    factors = model.task_factors("mine")
    a = factors["roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight.0.lora_A"]
    b = factors["roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight.0.lora_B"]
    hidden, rank = model.config.hidden_size, model.config.lora_rank
    assert a.shape == (2, rank, hidden) and b.shape == (
        2,
        3 * hidden,
        rank,
    )  # query and passage adapters
    attention = model.backbone.layers[0].self_attn
    index = model.processor.adapters["mine.query"]
    assert (
        attention.q_proj.lora_A[index]
        is attention.k_proj.lora_A[index]
        is attention.v_proj.lora_A[index]
    )
    # per adapter: A and B of 2 embeddings; per layer A + 3 B parts of Wqkv, A and B of out_proj,
    # fc1, fc2
    assert len(model.task_parameters("mine")) == 2 * (2 * 2 + model.config.num_layers * (4 + 3 * 2))
    embedding = factors["roberta.embeddings.word_embeddings.parametrizations.weight.0.lora_A"]
    assert not embedding.any()  # PEFT: embedding A starts at zero, B random


def test_names_that_clash_or_are_malformed_are_refused(family) -> None:
    model, _ = family
    with pytest.raises(InvalidInput, match="exists"):
        model.add_task("retrieval")
    with pytest.raises(InvalidInput, match="invalid task name"):
        model.add_task("my.task")
    with pytest.raises(InvalidInput, match="unknown task 'nope'"):
        model.add_task("mine", init_from="nope")
    official = model.resolve_task("retrieval.query").adapter
    model.add_task("retrieval", init_from="retrieval", replace=True)  # allowed when asked
    assert model.resolve_task("retrieval.query").adapter > official


def test_factors_of_another_shape_are_refused_before_anything_changes(family) -> None:
    model, names = family
    factors = model.task_factors("retrieval")
    key = next(iter(factors))
    broken = {**factors, key: factors[key][..., :1]}
    before = model.info.tasks
    with pytest.raises(CheckpointError, match="has shape"):
        model.add_task("mine", factors=broken)
    with pytest.raises(CheckpointError, match="lack"):
        model.add_task("mine", factors={k: v for k, v in factors.items() if k != key})
    assert model.info.tasks == before
    assert_identical(embed(model, names[0]), embed(model, names[0]))


def test_forward_with_grad_equals_forward(family) -> None:
    model, _ = family
    multi = model.info.multivector_dim is not None
    batch = rows(model, "retrieval.query", multivector=multi)
    plain = model.forward(batch)
    graded = model.forward_with_grad(batch)
    assert graded.mask.sum(1).tolist() == [row.num_tokens for row in batch]
    for i, output in enumerate(plain):
        torch.testing.assert_close(graded.pooled[i], output.pooled[0], atol=1e-6, rtol=0)
        if multi:
            n = batch[i].num_tokens
            torch.testing.assert_close(
                graded.multivectors[i, :n], output.multivector, atol=1e-6, rtol=0
            )
            assert not graded.multivectors[i, n:].any()


def test_only_the_added_task_receives_gradients(family) -> None:
    model, _ = family
    model.add_task("mine", seed=0, factor_dtype=torch.float32)
    trained = model.task_parameters("mine")
    for parameter in trained:
        parameter.requires_grad_(True)
    others = [p for p in _all_parameters(model) if all(p is not t for t in trained)]
    assert not any(p.requires_grad for p in others)
    multi = model.info.multivector_dim is not None
    batch = [
        r
        for t in ("mine.query", "mine.passage", "retrieval.passage")
        for r in rows(model, t, multivector=multi)
    ]
    out = model.forward_with_grad(batch)
    (out.pooled.sum() + (out.multivectors.sum() if multi else 0)).backward()
    assert all(p.grad is not None for p in trained)


def _all_parameters(model) -> list[torch.nn.Parameter]:
    root = model.network if hasattr(model, "network") else model.backbone
    return list(root.parameters())


def test_checkpointed_gradients_equal_plain_ones(family) -> None:
    """Recomputed layers must see the routing they first ran with (the routing is gone by the
    backward pass; without AdapterRouting.checkpoint_contexts the adapter's gradients go
    missing)."""
    model, _ = family
    model.add_task("mine", seed=4, factor_dtype=torch.float32)
    params = model.task_parameters("mine")
    with torch.no_grad():
        for parameter in params:
            parameter.add_(
                0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(9))
            )
            parameter.requires_grad_(True)
    multi = model.info.multivector_dim is not None
    batch = rows(model, "mine.query", multivector=multi) + rows(
        model, "mine.passage", multivector=multi
    )

    def gradients(checkpointing: bool) -> list[torch.Tensor]:
        model.set_training(True, gradient_checkpointing=checkpointing)
        out = model.forward_with_grad(batch)
        loss = out.pooled.square().sum() + (out.multivectors.sum() if multi else 0)
        loss.backward()
        grads = [p.grad.clone() for p in params]
        for parameter in params:
            parameter.grad = None
        return grads

    plain = gradients(False)
    calls: list[int] = []
    layer = next(
        m for name, m in _root(model).named_modules() if name.endswith("layers.0.self_attn.q_proj")
    )
    hook = layer.register_forward_hook(lambda *_: calls.append(1))
    checkpointed = gradients(True)
    hook.remove()
    model.set_training(False)
    assert len(calls) == 2  # the layer really ran again in the backward pass
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def _root(model) -> torch.nn.Module:
    return model.network.backbone if hasattr(model, "network") else model.backbone
