"""Items per second of the library at fixed batch sizes: what a server batch of N rows can reach.

    python benchmarks/batch_efficiency.py            # mid-size random v4, the load test's texts

The load test's short texts (one item per request there) are encoded here with ``encode_text`` and
``batch_size`` = 1, 4, 8, 16, 32 and 64 rows per forward, in alternating rounds (the machine's speed
drifts), and the median over the rounds is printed with each size's ratio to batch 64. This is the
ceiling of a server whose batches hold that many rows (BENCHMARKS.md: why concurrency 8 is slower).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from loadtest import short_texts, write_random_v4

import uniembed

SIZES = (1, 4, 8, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        embedder = uniembed.load(write_random_v4("mid", Path(tmp)), device="cpu")
        texts = short_texts(args.texts)
        embedder.encode_text(texts[:64], task="retrieval")  # warm-up
        rates: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(args.rounds):
            for size in SIZES:
                started = time.perf_counter()
                embedder.encode_text(texts, task="retrieval", batch_size=size)
                rates[size].append(len(texts) / (time.perf_counter() - started))
    best = statistics.median(rates[64])
    print(f"{args.texts} short texts, median of {args.rounds} rounds")
    print("| rows per batch | items/s | vs 64 rows |")
    print("|---:|---:|---:|")
    for size in SIZES:
        rate = statistics.median(rates[size])
        print(f"| {size} | {rate:.1f} | {rate / best:.2f} |")


if __name__ == "__main__":
    main()
