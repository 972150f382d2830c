"""The codecs of ``uniembed.core.codecs`` (float16, int8, binary, residual), each scored by its
compiled kernel, against this machine's fp32 matmul peak and a torch MaxSim, all in one process.

    python benchmarks/codecs.py                     # the BENCHMARKS.md run
    python benchmarks/codecs.py --quick             # seconds: a smoke test
    python benchmarks/codecs.py --man /tmp/uniembed-man/man-10000x64-q200.pt   # + realistic recall

For each synthetic corpus shape (unit Gaussian rows, a 24-token unit query), ``--rounds``
interleaved rounds of, each at 1 and at 2 threads:

* ``peak`` — ``torch.mm`` of two fp32 ``--peak-size`` square matrices (torch's own thread count set
  to 1, then 2): the machine's fp32 matmul peak as torch reaches it;
* ``torch`` — ``core.scores.maxsim_ragged`` on the rows already decoded to float32 (the torch MaxSim
  the index runs today, without its decode);
* one timing per codec: ``codec.maxsim(query, codes, offsets, threads=…)``.

GFLOP/s count the useful work of exact MaxSim, ``2 · query tokens · rows · dim``, for every codec
(so a compressed codec's figure is "GFLOP-equivalent/s"). Ratios are medians of the per-round
ratios, each taken within one round: the machine is shared, only those mean much. Quality: the
mean |error| of each codec's scores against float32 MaxSim relative to the mean score, and the
stated certain bound; on the realistic corpus (``--man``, built by benchmarks/realistic_corpus.py:
all-MiniLM-L6-v2 token vectors of man pages, a proxy for v4's), the overlap of each codec's top 10
with float16's exact top 10 over its queries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniembed.core.codecs import CODEC_NAMES, Codec, kernel_features, make_codec
from uniembed.core.scores import maxsim_ragged

FULL_SHAPES = ("10000x64", "2000x800", "10000x16-112")
QUICK_SHAPES = ("300x64", "100x16-112")
THREADS = (1, 2)


CLOCK = (
    time.perf_counter
)  # --cpu-time: time.thread_time (one thread: time lost to others not counted)


def timed(function: Callable[[], Any]) -> float:
    started = CLOCK()
    function()
    return CLOCK() - started


def corpus(shape: str, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit float32 rows back to back and their offsets: ``DOCSxTOKENS`` or ``DOCSxLOW-HIGH``."""
    rng = np.random.default_rng(seed)
    docs, _, tokens = shape.partition("x")
    low, _, high = tokens.partition("-")
    lengths = rng.integers(int(low), int(high or low) + 1, int(docs))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = rng.standard_normal((int(offsets[-1]), dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows, offsets


def build_codecs(rows: np.ndarray, sample: int, seed: int) -> dict[str, Codec]:
    rng = np.random.default_rng(seed)
    training = rows[rng.choice(len(rows), size=min(sample, len(rows)), replace=False)]
    return {name: make_codec(name, rows.shape[1], sample=training) for name in CODEC_NAMES}


def exact(query: np.ndarray, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float32 MaxSim with torch (the quality reference)."""
    lengths = torch.from_numpy(np.diff(offsets))
    return maxsim_ragged(torch.from_numpy(query), torch.from_numpy(rows), lengths).numpy()


def measure(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    rows, offsets = corpus(shape, args.dim, seed=0)
    rng = np.random.default_rng(1)
    query = rng.standard_normal((args.query_tokens, args.dim), dtype=np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    started = time.perf_counter()
    codecs = build_codecs(rows, args.sample, seed=0)
    codes = {name: codec.encode(rows) for name, codec in codecs.items()}
    encode_seconds = time.perf_counter() - started
    truth = exact(query, rows, offsets)
    quality = {}
    for name, codec in codecs.items():
        scores = codec.maxsim(query, codes[name], offsets)
        bound = codec.error_bound(query, codes[name], offsets)
        error = np.abs(scores - truth)
        quality[name] = {
            "bytes_per_token": codec.bytes_per_token,
            "mean_abs_error": float(error.mean()),
            "max_abs_error": float(error.max()),
            "relative_mean_error": float(error.mean() / np.abs(truth).mean()),
            "mean_certain_bound": float(bound.mean()),
            "within_bound": bool((error <= bound).all()),
        }
    left, right = (
        torch.randn(args.peak_size, args.peak_size),
        torch.randn(args.peak_size, args.peak_size),
    )
    square = torch.empty(args.peak_size, args.peak_size)
    rows_t, query_t = torch.from_numpy(rows), torch.from_numpy(query)
    lengths_t = torch.from_numpy(np.diff(offsets))

    def with_threads(threads: int, run: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            torch.set_num_threads(threads)
            return run()

        return call

    runs: dict[str, Callable[[], Any]] = {}
    for threads in THREADS:
        runs[f"peak/{threads}"] = with_threads(threads, lambda: torch.mm(left, right, out=square))
        runs[f"torch/{threads}"] = with_threads(
            threads, lambda: maxsim_ragged(query_t, rows_t, lengths_t)
        )
        for name, codec in codecs.items():
            runs[f"{name}/{threads}"] = lambda codec=codec, name=name, threads=threads: (
                codec.maxsim(query, codes[name], offsets, threads=threads)
            )
    useful = 2 * args.query_tokens * rows.shape[0] * args.dim
    flops = {key: 2 * args.peak_size**3 if key.startswith("peak") else useful for key in runs}
    for run in runs.values():  # warm-up: page faults, thread pools
        run()
    rates: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            rates[key].append(flops[key] / timed(run) / 1e9)
    torch.set_num_threads(max(THREADS))

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[top], rates[bottom], strict=True))

    result: dict[str, Any] = {
        "shape": shape,
        "rows": int(rows.shape[0]),
        "docs": len(offsets) - 1,
        "query_tokens": args.query_tokens,
        "encode_seconds": encode_seconds,
        "gflops": {key: statistics.median(values) for key, values in rates.items()},
        "quality": quality,
        "ratios": {},
    }
    for threads in THREADS:
        for name in [*CODEC_NAMES, "torch"]:
            key = f"{name}/{threads}"
            result["ratios"][key] = {
                "of_peak": ratio(key, f"peak/{threads}"),
                "vs_float16": ratio(key, f"float16/{threads}"),
                "vs_torch": ratio(key, f"torch/{threads}"),
            }
    print(json.dumps(result), file=sys.stderr)
    return result


def realistic(path: Path, sample: int) -> dict[str, Any]:
    """Top-10 overlap of each codec with float16's exact top 10 on a realistic_corpus.py cache."""
    data = torch.load(path)
    docs = data["multivectors"].float().numpy()  # (n, tokens, 128), unit rows
    count, tokens, dim = docs.shape
    rows = np.ascontiguousarray(docs.reshape(-1, dim))
    offsets = np.arange(0, count * tokens + 1, tokens, dtype=np.int64)
    codecs = build_codecs(rows, sample, seed=0)
    codes = {name: codec.encode(rows) for name, codec in codecs.items()}
    queries = [q.float().numpy() for q in data["queries"]]
    targets = data["targets"].tolist()
    top: dict[str, list[np.ndarray]] = {name: [] for name in codecs}
    for query in queries:
        for name, codec in codecs.items():
            top[name].append(np.argsort(-codec.maxsim(query, codes[name], offsets))[:10])
    result: dict[str, Any] = {"path": str(path), "docs": count, "queries": len(queries)}
    for name in codecs:
        overlap = [
            len(set(a.tolist()) & set(b.tolist())) / 10
            for a, b in zip(top[name], top["float16"], strict=True)
        ]
        hits = [target in t.tolist() for target, t in zip(targets, top[name], strict=True)]
        result[name] = {
            "overlap_at_10": float(np.mean(overlap)),
            "target_in_top_10": float(np.mean(hits)),
            "centroids": len(getattr(codecs[name], "centroids", [])),
        }
    print(json.dumps(result), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", help=f"default {' '.join(FULL_SHAPES)}")
    parser.add_argument("--query-tokens", type=int, default=24)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sample", type=int, default=65536, help="residual's k-means sample")
    parser.add_argument("--man", type=Path, help="a realistic_corpus.py cache (.pt)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this thread's CPU time, one thread only (for a machine shared with others)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds, args.peak_size = args.shapes or list(QUICK_SHAPES), 2, 256
        args.sample = min(args.sample, 4096)
    global CLOCK, THREADS
    if args.cpu_time:
        CLOCK, THREADS = time.thread_time, (1,)
    print(f"kernels: {kernel_features()}; rounds: {args.rounds} (medians)")
    results = [measure(shape, args) for shape in args.shapes or FULL_SHAPES]
    for r in results:
        print(f"\n{r['shape']}: {r['rows']} rows, {r['docs']} documents, 24-token query")
        print(
            "| codec | bytes/token | threads | GFLOP/s | fp32 peak GFLOP/s | of peak | vs float16 "
            "| vs torch fp32 MaxSim | rel. mean error | mean certain bound |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for threads in THREADS:
            for name in [*CODEC_NAMES, "torch"]:
                key = f"{name}/{threads}"
                ratios, quality = r["ratios"][key], r["quality"].get(name)
                size = quality["bytes_per_token"] if quality else 512
                error = f"{quality['relative_mean_error']:.1e}" if quality else "0"
                bound = f"{quality['mean_certain_bound']:.3g}" if quality else "—"
                print(
                    f"| {name} | {size} | {threads} | {r['gflops'][key]:.0f} | "
                    f"{r['gflops'][f'peak/{threads}']:.0f} | {ratios['of_peak']:.2f} | "
                    f"{ratios['vs_float16']:.2f} | {ratios['vs_torch']:.2f} | {error} | {bound} |"
                )
    output: dict[str, Any] = {"synthetic": results}
    if args.man:
        man = realistic(args.man, args.sample)
        output["realistic"] = man
        print(f"\nrealistic: {man['docs']} man pages, {man['queries']} queries")
        print("| codec | top-10 overlap with float16 | target in top 10 |")
        print("|---|---|---|")
        for name in CODEC_NAMES:
            print(
                f"| {name} | {man[name]['overlap_at_10']:.3f} | "
                f"{man[name]['target_in_top_10']:.3f} |"
            )
    if args.out:
        args.out.write_text(json.dumps(output, indent=2))
    return output


if __name__ == "__main__":
    main()
