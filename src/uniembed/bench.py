"""What ``uniembed bench`` measures (:mod:`uniembed.cli.bench`): our scheduler against the official
way of batching, in one run.

The baseline runs the same model the way the official code does: one call per task (so per-task
sub-batches), texts and images in separate calls, fixed batches. For v4 (``encode_text`` /
``encode_image``) that is inputs in the order given, batches of 8; for v3 (``encode``, which sorts
each call's texts by character length, longest first) it is length-sorted batches of 32.
uniembed sorts by token length, batches by a token budget and mixes tasks and modalities in one
batch, packed padding-free (``--no-packing``: padded batches, as before packing). Both produce the
same embeddings (checked); the ratio of their wall times is printed, with the tokens each forward
ran on and how many of them were padding.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from uniembed.engine.planning import BatchPolicy

WORDS = (
    "solar",
    "panel",
    "energy",
    "cell",
    "light",
    "power",
    "grid",
    "battery",
    "storage",
    "voltage",
    "current",
    "inverter",
    "roof",
    "house",
    "efficiency",
    "silicon",
    "photon",
    "electron",
    "charge",
    "design",
    "install",
    "cost",
    "year",
    "home",
    "system",
    "panel",
    "data",
)


@dataclass
class Workload:
    """Items with their task, in the order a user would submit them."""

    items: list  # TextItem | ImageItem
    tasks: list[str]


@dataclass(frozen=True)
class Baseline:
    """How the official code batches one call: fixed ``batch_size``, optionally longest text
    first."""

    batch_size: int
    sort_by_length: bool

    @property
    def label(self) -> str:
        return f"official-style ({self.batch_size}{', sorted' if self.sort_by_length else ''})"


def realistic_workload(count: int, images: int, tasks: Sequence[str], seed: int = 0) -> Workload:
    """Texts with log-normal word counts (queries of a few words to passages of ~400), plus
    images."""
    from uniembed.inputs.items import ImageItem, TextItem

    rng = random.Random(seed)
    items: list = []
    for _ in range(count):
        words = max(2, min(400, int(rng.lognormvariate(3.4, 1.0))))
        items.append(TextItem(" ".join(rng.choice(WORDS) for _ in range(words))))
    generator = np.random.default_rng(seed)
    for _ in range(images):
        width, height = rng.choice(
            [(640, 480), (1240, 1754), (320, 320), (800, 200)]
        )  # photo, A4 page, …
        pixels = generator.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        items.insert(
            rng.randrange(len(items) + 1),
            ImageItem(Image.fromarray(pixels).resize((width, height))),
        )
    return Workload(items, [rng.choice(list(tasks)) for _ in items])


def official_batches(workload: Workload, baseline: Baseline) -> list[tuple[str, list[int]]]:
    """(task, item indices) per forward pass: one call per (task, modality), fixed-size batches.

    >>> from uniembed.inputs.items import TextItem
    >>> work = Workload([TextItem("a"), TextItem("bbb"), TextItem("cc")], ["q", "q", "q"])
    >>> official_batches(work, Baseline(2, sort_by_length=True))
    [('q', [1, 2]), ('q', [0])]
    """
    from uniembed.inputs.items import ImageItem

    groups: dict[tuple[str, bool], list[int]] = {}
    for index, (item, task) in enumerate(zip(workload.items, workload.tasks)):
        groups.setdefault((task, isinstance(item, ImageItem)), []).append(index)
    batches: list[tuple[str, list[int]]] = []
    for (task, is_image), indices in groups.items():
        if baseline.sort_by_length and not is_image:
            indices = sorted(
                indices, key=lambda i: -len(workload.items[i].text)
            )  # stable, as np.argsort is not
        step = baseline.batch_size
        batches.extend(
            (task, indices[start : start + step]) for start in range(0, len(indices), step)
        )
    return batches


def official_style(embedder, workload: Workload, baseline: Baseline) -> list[torch.Tensor]:
    """Run :func:`official_batches` one forward pass each; results in input order."""
    results: list[torch.Tensor | None] = [None] * len(workload.items)
    for task, chunk in official_batches(workload, baseline):
        plan = embedder.plan([workload.items[i] for i in chunk], task)
        one_batch = BatchPolicy(sys.maxsize, len(chunk), packed=False)  # official: padded
        vectors = embedder.run(plan, policy=one_batch).embeddings
        for i, vector in zip(chunk, vectors):
            results[i] = vector
    return results  # type: ignore[return-value]


def ours(embedder, workload: Workload, policy: BatchPolicy | None = None) -> list[torch.Tensor]:
    """uniembed's way: every item in one plan, batched by the engine (``policy``: its own)."""
    return embedder.run(embedder.plan(workload.items, workload.tasks), policy=policy).embeddings


@dataclass(frozen=True)
class Timing:
    """One timed run: wall seconds and the tokens its forward batches ran on (padding included)."""

    seconds: float
    padded_tokens: int
    vectors: list[torch.Tensor]


def timed(embedder, function: Callable[[], list[torch.Tensor]]) -> Timing:
    padded_before = embedder.engine.totals.padded_tokens
    start = time.perf_counter()
    vectors = function()
    seconds = time.perf_counter() - start
    return Timing(seconds, embedder.engine.totals.padded_tokens - padded_before, vectors)


def best_of(repeat: int, embedder, function: Callable[[], list[torch.Tensor]]) -> Timing:
    """The fastest of ``repeat`` timed runs (the least disturbed by other processes)."""
    return min((timed(embedder, function) for _ in range(repeat)), key=lambda t: t.seconds)
