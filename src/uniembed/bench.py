"""``uniembed bench``: our scheduler against the official way of batching, in one run.

The baseline runs the same model the way the official code does: inputs in the order given, one
call per task (so per-task sub-batches), texts and images in separate calls, fixed batches of 8.
uniembed sorts by length, batches by a token budget and mixes tasks and modalities in one batch.
Both produce the same embeddings (checked); the ratio of their wall times is printed.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from PIL import Image

WORDS = ("solar panel energy cell light power grid battery storage voltage current inverter roof house "
         "efficiency silicon photon electron charge design install cost year home system panel data").split()


@dataclass
class Workload:
    """Items with their task, in the order a user would submit them."""

    items: list  # TextItem | ImageItem
    tasks: list[str]


def realistic_workload(count: int, images: int, tasks: Seq[str], seed: int = 0) -> Workload:
    """Texts with log-normal word counts (queries of a few words to passages of ~400), plus images."""
    from uniembed.inputs.items import ImageItem, TextItem

    rng = random.Random(seed)
    items: list = []
    for _ in range(count):
        words = max(2, min(400, int(rng.lognormvariate(3.4, 1.0))))
        items.append(TextItem(" ".join(rng.choice(WORDS) for _ in range(words))))
    generator = np.random.default_rng(seed)
    for _ in range(images):
        width, height = rng.choice([(640, 480), (1240, 1754), (320, 320), (800, 200)])  # photo, A4 page, …
        pixels = generator.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        items.insert(rng.randrange(len(items) + 1), ImageItem(Image.fromarray(pixels).resize((width, height))))
    return Workload(items, [rng.choice(list(tasks)) for _ in items])


def official_style(embedder, workload: Workload, batch_size: int = 8) -> list[torch.Tensor]:
    """One call per (task, modality) in input order, fixed batches of ``batch_size``."""
    from uniembed.inputs.items import ImageItem

    results: list[torch.Tensor | None] = [None] * len(workload.items)
    groups: dict[tuple[str, bool], list[int]] = {}
    for index, (item, task) in enumerate(zip(workload.items, workload.tasks)):
        groups.setdefault((task, isinstance(item, ImageItem)), []).append(index)
    for (task, _), indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            plan = embedder.plan([workload.items[i] for i in chunk], task)
            with torch.inference_mode():
                outputs = embedder.model.forward(plan.sequences)  # one fixed batch, input order
            for i, vector in zip(chunk, plan.assemble(outputs).embeddings):
                results[i] = vector
    return results  # type: ignore[return-value]


def ours(embedder, workload: Workload) -> list[torch.Tensor]:
    return embedder.run(embedder.plan(workload.items, workload.tasks)).embeddings


def timed(function: Callable[[], list[torch.Tensor]]) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_command(
    model: Annotated[str, typer.Option(help="'mid' or 'tiny' (random v4 written to a temp dir), or a snapshot path")] = "mid",
    texts: Annotated[int, typer.Option(help="number of texts")] = 160,
    images: Annotated[int, typer.Option(help="number of images")] = 6,
    repeat: Annotated[int, typer.Option(help="timed rounds of each (best is kept)")] = 2,
    seed: int = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch default)")] = 0,
) -> None:
    """Throughput of uniembed's batching vs the official batching on a realistic mix."""
    import uniembed

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        embedder = uniembed.load(_snapshot(model, Path(tmp)))
        workload = realistic_workload(texts, images, embedder.info.tasks, seed)
        if "image" not in embedder.info.modalities:
            workload = Workload(workload.items[:texts], workload.tasks[:texts])
            workload = Workload([i for i in workload.items if hasattr(i, "text")], workload.tasks)
        tokens = sum(s.num_tokens for s in embedder.plan(workload.items, workload.tasks).sequences)
        padded = _padded_tokens(embedder, workload)
        ours(embedder, Workload(workload.items[:8], workload.tasks[:8]))  # warm-up
        base_time, base = min((timed(lambda: official_style(embedder, workload)) for _ in range(repeat)), key=lambda r: r[0])
        our_time, mine = min((timed(lambda: ours(embedder, workload)) for _ in range(repeat)), key=lambda r: r[0])
        drift = max(float((a - b).abs().max()) for a, b in zip(base, mine))
    print(f"model={model} family={embedder.info.family} items={len(workload.items)} real_tokens={tokens} "
          f"threads={torch.get_num_threads()}")
    print(f"{'':22}{'seconds':>10}{'tokens/s':>12}{'padded tokens':>15}")
    print(f"{'official-style (8)':22}{base_time:10.2f}{tokens / base_time:12.0f}{padded['official']:15d}")
    print(f"{'uniembed':22}{our_time:10.2f}{tokens / our_time:12.0f}{padded['ours']:15d}")
    print(f"speed-up: {base_time / our_time:.2f}x   max |difference| between the two: {drift:.1e}")


def _snapshot(model: str, tmp: Path) -> Path:
    from uniembed.testing import jina_v4

    if model in ("mid", "tiny", "full"):
        size = {"mid": jina_v4.MID, "tiny": jina_v4.TINY, "full": jina_v4.FULL}[model]
        return jina_v4.write_tiny_jina_v4(tmp / model, size=size)
    return Path(model)


def _padded_tokens(embedder, workload: Workload) -> dict[str, int]:
    """Rows × longest row summed over batches: the work each schedule really pays for."""
    from uniembed.engine import plan_batches
    from uniembed.inputs.items import ImageItem

    lengths = [s.num_tokens for s in embedder.plan(workload.items, workload.tasks).sequences]
    ours_total = sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, embedder.policy))
    groups: dict[tuple[str, bool], list[int]] = {}
    for index, (item, task) in enumerate(zip(workload.items, workload.tasks)):
        groups.setdefault((task, isinstance(item, ImageItem)), []).append(index)
    official = 0
    for indices in groups.values():
        for start in range(0, len(indices), 8):
            chunk = indices[start : start + 8]
            official += len(chunk) * max(lengths[i] for i in chunk)
    return {"official": official, "ours": ours_total}
