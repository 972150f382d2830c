"""``uniembed bench``: throughput of uniembed's batching against the official batching, measured by
:mod:`uniembed.bench` on a random snapshot or a real one."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import torch
import typer

from uniembed.bench import (
    Baseline,
    Workload,
    best_of,
    official_style,
    ours,
    realistic_workload,
)
from uniembed.cli.options import Device, Dtype, model_option


def bench_command(
    model: Annotated[
        str,
        model_option(
            "'mid', 'tiny' (random v4), 'v3-mid', 'v3-tiny' (random v3), written to a temp "
            "dir; or a snapshot path or hub id"
        ),
    ] = "mid",
    texts: Annotated[int, typer.Option(help="number of texts")] = 160,
    images: Annotated[
        int, typer.Option(help="number of images (ignored for text-only models)")
    ] = 6,
    repeat: Annotated[int, typer.Option(help="timed rounds of each (best is kept)")] = 2,
    seed: int = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch default)")] = 0,
    device: Device = None,
    dtype: Dtype = None,
    peak_tflops: Annotated[
        float, typer.Option(help="the device's dense peak, for MFU (H100 bf16: 989)")
    ] = 989.0,
    packing: Annotated[
        bool, typer.Option(help="uniembed's batches packed padding-free (--no-packing: padded)")
    ] = True,
    compare_padded: Annotated[
        bool, typer.Option(help="also time uniembed's padded batches in the same run")
    ] = False,
) -> None:
    """Throughput of uniembed's batching vs the official batching on a realistic mix."""
    from uniembed.loader import load

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        embedder = load(_snapshot(model, Path(tmp)), device=device, dtype=dtype, packing=packing)
        info = embedder.info
        baseline = Baseline(info.official_batch_size, info.official_sorts_by_length)
        images = images if "image" in embedder.info.modalities else 0
        workload = realistic_workload(texts, images, embedder.info.tasks, seed)
        tokens = sum(embedder.plan(workload.items, workload.tasks).token_counts)
        ours(embedder, Workload(workload.items[:8], workload.tasks[:8]))  # warm-up
        base = best_of(repeat, embedder, lambda: official_style(embedder, workload, baseline))
        timings = {baseline.label: base}
        if compare_padded and packing:
            padded = dataclasses.replace(embedder.engine.policy, packed=False)
            timings["uniembed padded"] = best_of(
                repeat, embedder, lambda: ours(embedder, workload, padded)
            )
        mine = timings["uniembed"] = best_of(repeat, embedder, lambda: ours(embedder, workload))
        drift = max(
            float((a - b).abs().max())
            for timing in timings.values()
            for a, b in zip(base.vectors, timing.vectors)
        )
    print(
        f"model={model} family={embedder.info.family} items={len(workload.items)} "
        f"real_tokens={tokens} threads={torch.get_num_threads()} packing={packing}"
    )
    print(
        f"{'':28}{'seconds':>9}{'tokens/s':>10}{'forward tokens':>16}{'padding':>9}{'speed-up':>10}"
    )
    for label, timing in timings.items():
        padding = (timing.padded_tokens - tokens) / tokens  # share of the real tokens
        print(
            f"{label:28}{timing.seconds:9.2f}{tokens / timing.seconds:10.0f}"
            f"{timing.padded_tokens:16d}{padding:9.1%}{base.seconds / timing.seconds:9.2f}x"
        )
    print(
        f"speed-up: {base.seconds / mine.seconds:.2f}x   max |difference| from the official "
        f"loop: {drift:.1e}"
    )
    if embedder.device.type == "cuda":
        achieved = embedder.flops_per_token() * tokens / mine.seconds / 1e12
        print(
            f"≈{achieved:.1f} TFLOP/s from 2 × linear weights × tokens "
            f"(MFU ≈ {100 * achieved / peak_tflops:.1f}% of {peak_tflops:g}; attention not counted)"
        )


def _snapshot(model: str, tmp: Path) -> Path:
    from uniembed.testing.snapshots import write_random_snapshot

    return write_random_snapshot(model, tmp) or Path(model)
