"""Cached (GradCache) mini-batches give the gradients of the full batch, on the real tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uniembed.models.registry import load_model
from uniembed.training.cached import cached_backward, concat_outputs
from uniembed.training.losses import CoSENTLoss, InfoNCELoss, JointLoss, MatryoshkaLoss

QUERIES = ["solar panels", "how do cells work", "light", "the sun and the world", "hello"]
DOCUMENTS = [
    f"{text} {tail}"
    for text in QUERIES
    for tail in ("turn light into electricity", "die Sonne scheint")
]


def trainable(path: Path, symmetric: bool = False):
    model = load_model(path, device="cpu")
    model.add_task("mine", seed=0, symmetric=symmetric, factor_dtype=torch.float32)
    params = model.task_parameters("mine")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in params:  # B starts at zero: perturb so that every factor gets a gradient
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            parameter.requires_grad_(True)
    return model, params


def rows(model, texts: list[str], task: str, multivector: bool):
    spec = model.resolve_task(task)
    made = [model.text_sequence(model.tokenize(spec.prefix + t).ids, spec) for t in texts]
    for row in made:
        row.multivector = multivector
    return made


def gradients(params) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in params]
    for parameter in params:
        parameter.grad = None
    return grads


def assert_same_gradients(full: list[torch.Tensor], cached: list[torch.Tensor]) -> None:
    assert any(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, cached):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)


def run_both(model, params, sides, loss_fn, labels=None):
    outputs = [model.forward_with_grad(side) for side in sides]
    loss = loss_fn(*outputs, labels)
    (0.5 * loss).backward()
    full = gradients(params)
    results = []
    for size in (1, 2, 3, 10):
        cached_loss = cached_backward(
            model.forward_with_grad, sides, lambda s: loss_fn(*s, labels), size, scale=0.5
        )
        torch.testing.assert_close(cached_loss, loss.detach(), atol=1e-6, rtol=1e-6)
        results.append(gradients(params))
    return full, results


def test_v4_joint_matryoshka_loss(tiny_v4_path: Path) -> None:
    """Single and multi-vectors, uneven mini-batches, documents longer than queries: the cached
    multi-vector gradients must be cut to each mini-batch's own padding."""
    model, params = trainable(tiny_v4_path)
    sides = [rows(model, QUERIES, "mine.query", True), rows(model, DOCUMENTS, "mine.passage", True)]
    loss = JointLoss(
        MatryoshkaLoss(InfoNCELoss(0.05), dims=(16, 32, 64)), 0.05, weights=(1.0, 0.5, 0.3)
    )
    full, cached = run_both(model, params, sides, loss)
    for grads in cached:
        assert_same_gradients(full, grads)


def test_v3_bidirectional_info_nce(tiny_v3_path: Path) -> None:
    model, params = trainable(tiny_v3_path)
    sides = [
        rows(model, QUERIES, "mine.query", False),
        rows(model, DOCUMENTS, "mine.passage", False),
    ]
    full, cached = run_both(model, params, sides, InfoNCELoss(0.02, bidirectional=True))
    for grads in cached:
        assert_same_gradients(full, grads)


def test_v3_cosent(tiny_v3_path: Path) -> None:
    model, params = trainable(tiny_v3_path, symmetric=True)
    sides = [rows(model, QUERIES, "mine", False), rows(model, DOCUMENTS[::2], "mine", False)]
    labels = torch.tensor([0.2, 0.9, 0.4, 0.4, 0.0])
    full, cached = run_both(model, params, sides, CoSENTLoss(0.05), labels)
    for grads in cached:
        assert_same_gradients(full, grads)


def test_concat_pads_multivectors_with_zeros(tiny_v4_path: Path) -> None:
    model = load_model(tiny_v4_path, device="cpu")
    short = model.forward_with_grad(rows(model, ["a"], "retrieval.query", True))
    long = model.forward_with_grad(rows(model, ["a b c d e f g"], "retrieval.query", True))
    joined = concat_outputs([short, long])
    assert joined.multivectors.shape[1] == long.multivectors.shape[1]
    assert (
        joined.mask[0].sum() == short.mask.sum()
        and not joined.multivectors[0, short.mask.shape[1] :].any()
    )


def test_mini_batch_size_must_be_positive(tiny_v3_path: Path) -> None:
    model, _ = trainable(tiny_v3_path)
    with pytest.raises(ValueError, match="positive"):
        cached_backward(model.forward_with_grad, [[]], lambda s: s[0].pooled.sum(), 0)
