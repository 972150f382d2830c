"""The exact MaxSim kernel (``core.scores.maxsim_ragged`` on float16 rows, what the index's
exact mode runs) against this machine's fp32 matmul peak, measured in the same process.

    python benchmarks/maxsim_kernel.py                 # the BENCHMARKS.md run
    python benchmarks/maxsim_kernel.py --quick         # seconds: a smoke test

For each corpus shape, ``--rounds`` interleaved rounds of three timings (median of each):

* ``peak`` — ``torch.mm`` of two fp32 ``--peak-size`` square matrices into a preallocated output:
  the machine's fp32 matmul peak as torch reaches it (the bar: the kernel at ≥ 60% of it);
* ``kernel`` — ``maxsim_ragged(query, rows, lengths)``: float16 rows decoded block by block, the
  query × rows product, the per-document max and the sum over query tokens;
* ``same-shape mm`` — a plain fp32 ``torch.mm`` of the whole corpus (already float32) with the
  query: the matmul alone, no decode, no max;
* ``before`` — the loop this kernel replaced (8,192-row chunks, a (rows, query tokens) product and
  ``torch.segment_reduce`` for the per-document max), for the ratio new / old.

GFLOP/s count the useful work, ``2 · query tokens · Σ rows · dim``, for the kernel and the
same-shape matmul alike. The machine is shared (2 cores): only ratios measured in one round mean
much.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from uniembed.core.scores import maxsim_ragged

FULL_SHAPES = ("10000x64", "2000x800", "10000x16-112")
QUICK_SHAPES = ("500x64", "200x16-112")


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def corpus(shape: str, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float16 unit rows stored back to back and the rows per document: ``DOCSxTOKENS`` or
    ``DOCSxLOW-HIGH`` (ragged: lengths uniform in [LOW, HIGH])."""
    generator = torch.Generator().manual_seed(seed)
    docs, _, tokens = shape.partition("x")
    low, _, high = tokens.partition("-")
    if high:
        lengths = torch.randint(int(low), int(high) + 1, (int(docs),), generator=generator)
    else:
        lengths = torch.full((int(docs),), int(low))
    rows = torch.randn(int(lengths.sum()), dim, generator=generator)
    return torch.nn.functional.normalize(rows, dim=-1).half(), lengths


def before(query: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The exact MaxSim loop of core/scores.py before the blocked kernel (for reference)."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    targets = torch.arange(0, int(offsets[-1]), 8192)
    starts = torch.unique(torch.searchsorted(offsets, targets, right=True) - 1).tolist()
    bounds = [*starts, len(lengths)]
    row_bounds = offsets[bounds].tolist()
    scores = torch.empty(len(lengths))
    largest = max(b - a for a, b in pairwise(row_bounds))
    block, sims = torch.empty(largest, query.shape[1]), torch.empty(largest, query.shape[0])
    for k in range(len(starts)):
        first, last, start, stop = bounds[k], bounds[k + 1], row_bounds[k], row_bounds[k + 1]
        block[: stop - start].copy_(rows[start:stop])
        torch.mm(block[: stop - start], query.T, out=sims[: stop - start])
        best = torch.segment_reduce(sims[: stop - start], "max", lengths=lengths[first:last])
        scores[first:last] = best.sum(dim=-1)
    return scores


def measure(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    rows, lengths = corpus(shape, args.dim, seed=0)
    query = torch.nn.functional.normalize(torch.randn(args.query_tokens, args.dim), dim=-1)
    as_float = rows.float()
    product = torch.empty(rows.shape[0], args.query_tokens)
    left, right = (
        torch.randn(args.peak_size, args.peak_size),
        torch.randn(args.peak_size, args.peak_size),
    )
    square = torch.empty(args.peak_size, args.peak_size)
    runs = {
        "peak": lambda: torch.mm(left, right, out=square),
        "kernel": lambda: maxsim_ragged(query, rows, lengths),
        "same-shape mm": lambda: torch.mm(as_float, query.T, out=product),
        "before": lambda: before(query, rows, lengths),
    }
    torch.testing.assert_close(runs["kernel"](), runs["before"](), rtol=0, atol=1e-4)
    flops = {
        "peak": 2 * args.peak_size**3,
        "kernel": 2 * args.query_tokens * rows.shape[0] * args.dim,
        "same-shape mm": 2 * args.query_tokens * rows.shape[0] * args.dim,
        "before": 2 * args.query_tokens * rows.shape[0] * args.dim,
    }
    for run in runs.values():  # warm-up: page faults, thread pool
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    ratios: list[float] = []
    for _ in range(args.rounds):
        for name, run in runs.items():
            seconds[name].append(timed(run))
        ratios.append(
            (flops["kernel"] / seconds["kernel"][-1]) / (flops["peak"] / seconds["peak"][-1])
        )
    rates = {name: flops[name] / statistics.median(s) / 1e9 for name, s in seconds.items()}
    result = {
        "shape": shape,
        "rows": int(rows.shape[0]),
        "docs": len(lengths),
        "query_tokens": args.query_tokens,
        "gflops": rates,
        "kernel_ms": 1000 * statistics.median(seconds["kernel"]),
        "kernel_share_of_peak": rates["kernel"] / rates["peak"],
        "kernel_share_of_peak_per_round_median": statistics.median(ratios),
        "kernel_vs_same_shape_mm": rates["kernel"] / rates["same-shape mm"],
        "kernel_vs_before": rates["kernel"] / rates["before"],
    }
    print(json.dumps(result), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", help=f"default {' '.join(FULL_SHAPES)}")
    parser.add_argument("--query-tokens", type=int, default=24)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.shapes, args.rounds, args.peak_size = args.shapes or list(QUICK_SHAPES), 3, 512
    results = [measure(shape, args) for shape in args.shapes or FULL_SHAPES]
    print(f"torch threads: {torch.get_num_threads()}; rounds: {args.rounds} (medians)")
    print(
        "| corpus | rows | kernel ms | kernel GFLOP/s | fp32 peak GFLOP/s | kernel / peak "
        "| same-shape mm GFLOP/s | kernel / same-shape mm | before GFLOP/s | kernel / before |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        g = r["gflops"]
        print(
            f"| {r['shape']} | {r['rows']} | {r['kernel_ms']:.1f} | {g['kernel']:.0f} | "
            f"{g['peak']:.0f} | {r['kernel_share_of_peak_per_round_median']:.2f} | "
            f"{g['same-shape mm']:.0f} | {r['kernel_vs_same_shape_mm']:.2f} | "
            f"{g['before']:.0f} | {r['kernel_vs_before']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
