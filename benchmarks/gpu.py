"""Full-size jina-embeddings-v4 on one GPU, in one run: one table for BENCHMARKS.md.

    bash benchmarks/gpu.sh                 # the full size on CUDA (bf16), a few minutes
    python benchmarks/gpu.py --smoke       # the mid size on whatever device there is, seconds

A random snapshot of the published size is written in the official layout (bf16 shards; no
download), loaded once, and measured:

- the device's own bf16 matrix-product rate (the ceiling MFU is quoted against, measured here);
- 512-token passages and passages of 128-512 tokens, and A4 page images at the default pixel
  budget: real tokens/s and model FLOPs utilisation (2 x linear weights x tokens, attention not
  counted), with batches padded to their longest row and packed padding-free (and the two layouts'
  vectors compared);
- peak GPU memory of the library;
- the server at concurrency 64 against one library call (``benchmarks/loadtest.py``, its own
  processes);
- a training step's time and peak memory (``benchmarks/training.py``, its own process).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
A4_PAGE = (1240, 1754)  # 150 dpi


@dataclass
class Row:
    """One line of the table."""

    what: str
    mode: str
    items: int
    tokens: int
    padded_tokens: int
    seconds: float
    tflops: float
    peak_tflops: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def mfu(self) -> float:
        return self.tflops / self.peak_tflops


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """The device's measured dense matrix-product rate: mean of 10 products after 3 warm-ups."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 2 * size**3 * 10 / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def passages(embedder, count: int, low: int, high: int, seed: int = 0) -> list:
    """``count`` texts of ``low``..``high`` tokens each (cut at exactly that many tokens)."""
    from uniembed.bench import WORDS
    from uniembed.inputs.items import TextItem

    rng = random.Random(seed)
    items = []
    for _ in range(count):
        target = rng.randint(low, high)
        words = [rng.choice(WORDS) for _ in range(target)]  # bench's vocabulary
        ids = embedder.tokenize(" ".join(words)).ids
        while len(ids) < target:  # every word is at least one token; this rarely loops
            words += words
            ids = embedder.tokenize(" ".join(words)).ids
        items.append(TextItem(_decode_prefix(embedder, " ".join(words), target)))
    return items


def _decode_prefix(embedder, text: str, tokens: int) -> str:
    """The prefix of ``text`` that holds its first ``tokens`` tokens."""
    offsets = embedder.tokenize(text).offsets
    return text[: offsets[tokens - 1][1]]


def pages(count: int, seed: int = 0) -> list:
    """A4 page renders: text-like stripes over noise, at 150 dpi."""
    from uniembed.inputs.items import ImageItem

    generator = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        width, height = A4_PAGE
        page = np.full((height, width, 3), 250, dtype=np.uint8)
        for top in range(100, height - 100, 40):
            page[top : top + 14, 90 : width - 90] = generator.integers(0, 120, (14, width - 180, 1))
        items.append(ImageItem(Image.fromarray(page)))
    return items


LAYOUTS = ("padded", "packed")  # rows padded to the longest, or packed padding-free


def policy(embedder, layout: str):
    """The engine's batch limits, running batches in ``layout``."""
    from uniembed.engine.planning import BatchPolicy

    limits = embedder.engine.policy
    return BatchPolicy(limits.token_budget, limits.max_batch_size, packed=layout == "packed")


def measure(embedder, what: str, items: list, task: str, peak: float, repeat: int) -> list[Row]:
    """Each layout's best of ``repeat`` runs over ``items`` (after one warm-up run); the layouts'
    vectors are compared (the packed path's CUDA kernels are checked nowhere else)."""
    plan = embedder.plan(items, task)
    tokens = sum(plan.token_counts)
    flops = embedder.flops_per_token()
    rows, vectors = [], {}
    for layout in LAYOUTS:
        limits = policy(embedder, layout)
        vectors[layout] = torch.stack(embedder.run(plan, policy=limits).embeddings).float()
        run = functools.partial(embedder.run, plan, policy=limits)
        seconds, padded = min(_timed(embedder, run) for _ in range(repeat))
        tflops = flops * tokens / seconds / 1e12
        rows.append(Row(what, layout, len(items), tokens, padded, seconds, tflops, peak))
    cosine = torch.nn.functional.cosine_similarity(vectors["padded"], vectors["packed"], dim=-1)
    print(f"{what}: packed vs padded vectors, lowest cosine {float(cosine.min()):.6f}", flush=True)
    return rows


def _timed(embedder, run: Callable[[], object]) -> tuple[float, int]:
    padded_before = embedder.engine.totals.padded_tokens
    _sync(embedder.device)
    start = time.perf_counter()
    run()
    _sync(embedder.device)
    return time.perf_counter() - start, embedder.engine.totals.padded_tokens - padded_before


def server_vs_library(snapshot: Path, args: argparse.Namespace, out: Path) -> dict:
    """``benchmarks/loadtest.py`` at concurrency 64: the server's items/s over one library call."""
    command = [
        sys.executable,
        str(HERE / "loadtest.py"),
        "--model",
        str(snapshot),
        "--concurrency",
        "64",
        "--rounds",
        str(args.server_rounds),
        "--requests",
        str(args.server_requests),
        "--time-limit",
        "60",
        "--json",
        str(out),
        *(["--device", args.device] if args.device else []),
        *(["--dtype", args.dtype] if args.dtype else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout[-3000:], flush=True)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    levels = json.loads(out.read_text())
    server = next(level for level in levels if level["mode"] == "server")
    library = levels[0]
    return {
        "library_items_per_s": library["items_per_s"],
        "server_items_per_s": server["items_per_s"],
        "ratio": server["items_per_s"] / library["items_per_s"],
        "failed": server["failed"],
    }


def training_step(snapshot: Path, args: argparse.Namespace) -> str:
    """``benchmarks/training.py``'s table for the configurations asked for."""
    command = [
        sys.executable,
        str(HERE / "training.py"),
        "--model",
        str(snapshot),
        "--device",
        args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "--steps",
        str(args.train_steps),
        "--batch-size",
        str(args.train_batch),
        "--mini-batch-size",
        str(args.train_mini_batch),
        "--configs",
        args.train_configs,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else f"training failed:\n{done.stderr[-1500:]}"


def print_table(rows: list[Row], peak: float, memory: float, device: str) -> None:
    print(
        f"\ndevice={device}  measured dense matmul peak={peak:.1f} TFLOP/s  "
        f"library peak memory={memory:.1f} GiB"
    )
    print(
        f"{'workload':34}{'layout':>8}{'items':>7}{'tokens':>9}{'padded':>9}{'s':>8}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}"
    )
    for row in rows:
        print(
            f"{row.what:34}{row.mode:>8}{row.items:7d}{row.tokens:9d}{row.padded_tokens:9d}"
            f"{row.seconds:8.2f}{row.tokens_per_s:11.0f}{row.tflops:9.1f}{100 * row.mfu:6.1f}%"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="mid size, few items: checks the script"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--pages", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--server-requests", type=int, default=1024)
    parser.add_argument("--server-rounds", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-mini-batch", type=int, default=8)
    parser.add_argument("--train-configs", default="cached,cached+checkpointing")
    parser.add_argument("--skip", default="", help="comma-separated: server, training")
    args = parser.parse_args(argv)
    if args.smoke:  # every step once, small: seconds on a CPU
        args.passages, args.pages, args.repeat, args.server_requests = 8, 2, 1, 64
        args.train_steps, args.train_batch, args.train_mini_batch = 3, 4, 2
        args.train_configs = "cached"
    return args


def workloads(embedder, args: argparse.Namespace) -> list[tuple[str, list]]:
    """What is measured: fixed and mixed-length passages, and page images."""
    return [
        ("passages, 512 tokens", passages(embedder, args.passages, 512, 512)),
        ("passages, 128-512 tokens", passages(embedder, args.passages, 128, 512)),
        ("A4 pages (default max_pixels)", pages(args.pages)),
    ]


def main(argv: list[str] | None = None) -> None:
    import uniembed
    from uniembed.testing import jina_v4

    args = parse_args(argv)
    name, size = ("mid", jina_v4.MID) if args.smoke else ("full", jina_v4.FULL)
    with tempfile.TemporaryDirectory(prefix="uniembed-gpu-") as tmp:
        started = time.perf_counter()
        snapshot = jina_v4.write_tiny_jina_v4(Path(tmp) / name, size=size)
        print(
            f"random {name} snapshot written in {time.perf_counter() - started:.0f} s", flush=True
        )
        started = time.perf_counter()
        embedder = uniembed.load(snapshot, device=args.device, dtype=args.dtype)
        device = embedder.device
        print(f"loaded on {device} in {time.perf_counter() - started:.0f} s", flush=True)
        on_gpu = device.type == "cuda"
        peak = matmul_peak_tflops(
            device, torch.bfloat16 if on_gpu else torch.float32, 8192 if on_gpu else 1024
        )
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        rows = [
            row
            for what, items in workloads(embedder, args)
            for row in measure(embedder, what, items, "retrieval.passage", peak, args.repeat)
        ]
        memory = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")
        print_table(rows, peak, memory, str(device))
        del embedder
        if on_gpu:
            torch.cuda.empty_cache()
        skip = set(args.skip.split(","))
        if "server" not in skip:
            result = server_vs_library(snapshot, args, Path(tmp) / "loadtest.json")
            print(f"\nserver at c=64 vs one library call: {json.dumps(result)}", flush=True)
        if "training" not in skip:
            print("\ntraining step:\n" + training_step(snapshot, args), flush=True)


if __name__ == "__main__":
    main()
