"""Cached mini-batches (GradCache, Gao et al. 2021): a contrastive loss over a large batch with the
activation memory of one small mini-batch.

A contrastive loss couples every row of a batch (each query is scored against every document), so
it cannot simply be split into independent mini-batches. GradCache splits the model instead:

1. embed every row in mini-batches **without** autograd;
2. compute the loss on the whole batch's embeddings (leaf tensors) and backpropagate it to them,
   which gives ``g = ∂L/∂e`` for every embedding ``e``;
3. embed each mini-batch again **with** autograd and backpropagate ``⟨e(θ), g⟩``: its gradient is
   ``(∂e/∂θ)ᵀ g``, exactly the chain rule of the full-batch backward, mini-batch by mini-batch.

Step 3 must recompute the same embeddings as step 1: the random state of each mini-batch is
replayed (the models run without dropout, but nothing here relies on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from uniembed.models.base import GradOutput, Row

Embed = Callable[[Sequence[Row]], GradOutput]
Loss = Callable[[list[GradOutput]], torch.Tensor]
Backward = Callable[[torch.Tensor], None]


def concat_outputs(parts: Sequence[GradOutput]) -> GradOutput:
    """Join mini-batch outputs into one batch (multi-vectors right-padded with zeros)."""
    pooled = torch.cat([p.pooled for p in parts])
    longest = max(p.mask.shape[1] for p in parts)
    mask = torch.cat([F.pad(p.mask, (0, longest - p.mask.shape[1])) for p in parts])
    multivectors = None
    if all(p.multivectors is not None for p in parts):
        multivectors = torch.cat(
            [F.pad(p.multivectors, (0, 0, 0, longest - p.mask.shape[1])) for p in parts]
        )
    return GradOutput(pooled, multivectors, mask)


class _RandomState:
    """The CPU (and current CUDA device) random state at one moment, to run code again under it."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    @contextmanager
    def replayed(self) -> Iterator[None]:
        devices = [torch.cuda.current_device()] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda)
            yield


def cached_backward(
    embed: Embed,
    sides: Sequence[Sequence[Row]],
    loss_fn: Loss,
    mini_batch_size: int,
    scale: float = 1.0,
    backward: Backward = torch.Tensor.backward,
) -> torch.Tensor:
    """Accumulate into the parameters' ``.grad`` the gradient of ``scale · loss_fn(embedded
    sides)``, embedding at most ``mini_batch_size`` rows with autograd at a time. Each row must have
    one span.

    ``backward`` runs the step-2 backward (e.g. ``accelerator.backward``); step 3 uses plain
    autograd. Returns the loss, detached and unscaled.
    """
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be positive, got {mini_batch_size}")
    chunks = [
        [rows[i : i + mini_batch_size] for i in range(0, len(rows), mini_batch_size)]
        for rows in sides
    ]
    states: list[list[_RandomState]] = []
    cached: list[GradOutput] = []
    with torch.no_grad():
        for side in chunks:
            side_states, parts = [], []
            for chunk in side:
                side_states.append(_RandomState())
                parts.append(embed(chunk))
            states.append(side_states)
            cached.append(_leaf(concat_outputs(parts)))
    loss = loss_fn(cached)
    backward(loss * scale)
    for side, side_states, full in zip(chunks, states, cached):
        start = 0
        for chunk, state in zip(side, side_states):
            with state.replayed():
                out = embed(chunk)
            stop = start + len(chunk)
            surrogate = _surrogate(out, full, start, stop)
            if surrogate is not None:
                surrogate.backward()
            start = stop
    return loss.detach()


def _surrogate(out: GradOutput, full: GradOutput, start: int, stop: int) -> torch.Tensor | None:
    """``Σ ⟨e, g⟩`` over the outputs of rows ``[start, stop)`` that the loss used."""
    terms = []
    if full.pooled.grad is not None:
        terms.append((out.pooled * full.pooled.grad[start:stop]).sum())
    if (
        out.multivectors is not None
        and full.multivectors is not None
        and full.multivectors.grad is not None
    ):
        tokens = out.multivectors.shape[
            1
        ]  # this mini-batch's padding; the rest of the cached grad is 0
        terms.append((out.multivectors * full.multivectors.grad[start:stop, :tokens]).sum())
    return torch.stack(terms).sum() if terms else None


def _leaf(output: GradOutput) -> GradOutput:
    """The embeddings as leaf tensors that collect the loss's gradient."""
    multivectors = (
        output.multivectors.detach().requires_grad_() if output.multivectors is not None else None
    )
    return GradOutput(output.pooled.detach().requires_grad_(), multivectors, output.mask)
