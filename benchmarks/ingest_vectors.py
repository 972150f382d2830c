"""Ingest of stored embeddings: ``Index.add_vectors`` and ``uniembed index --from-embeddings``
against the bare store write of the same points, in one run.

    python benchmarks/ingest_vectors.py --pages 2000 --tokens 800     # the BENCHMARKS.md run
    python benchmarks/ingest_vectors.py --quick                       # seconds: a smoke test

Three ways to put the same synthetic pages (a 64-d single vector and ``tokens`` × 128 float16
values per page) into a fresh embedded index, interleaved over ``--rounds`` (pages/s, median):

* ``store (baseline)`` — points built as lists and written with ``Store.upsert``, ``--batch``
  pages per store operation: no index, no checks (what ``Index.add`` ends with, without the model);
* ``add_vectors`` — ``Index.add_vectors`` from numpy arrays (checks, float16 rounding, payloads);
* ``from-embeddings`` — ``add_embeddings_file`` from a Parquet file as ``uniembed embed --vectors
  both`` writes it (reading included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def synthetic(pages: int, tokens: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unit single vectors (pages, 64) and multi-vectors (tokens, 128) of float16 values."""
    generator = np.random.default_rng(seed)
    dense = generator.standard_normal((pages, 64)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    multi = []
    for _ in range(pages):
        rows = generator.standard_normal((tokens, 128)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        multi.append(rows.astype(np.float16).astype(np.float32))
    return dense, multi


def write_parquet(path: Path, model: str, dense: np.ndarray, multi: list[np.ndarray]) -> None:
    """The file ``uniembed embed --vectors both`` would write (through its own writer)."""
    from uniembed.bulk.outputs import EmbeddedRecord, Entry, PartsWriter

    manifest = {"format": "parquet", "model": model, "task": "retrieval.passage"}
    writer = PartsWriter(path, "parquet", {**manifest, "dimensions": None, "vectors": "both"})
    for start in range(0, len(dense), 256):
        writer.write(
            [
                EmbeddedRecord(
                    f"page-{n}",
                    dense[n],
                    0,
                    multi[n],
                    Entry(f"page-{n}", None, "image", None, {}, None),
                )
                for n in range(start, min(len(dense), start + 256))
            ]
        )
    writer.finish()


def store_baseline(path: Path, dense: np.ndarray, multi: list[np.ndarray], batch: int) -> float:
    from uniembed.retrieval.store import Layout, Point, create_store, point_id

    store = create_store(path, Layout.build(64, 128, {}), {})
    started = time.perf_counter()
    for start in range(0, len(dense), batch):
        stop = min(len(dense), start + batch)
        store.upsert(
            [
                Point(
                    point_id(f"page-{n}", None),
                    dense[n].tolist(),
                    multi[n].tolist(),
                    {"id": f"page-{n}", "kind": "image", "metadata": {}},
                )
                for n in range(start, stop)
            ]
        )
    seconds = time.perf_counter() - started
    store.close()
    return seconds


def through_index(
    path: Path, embedder: Any, dense: np.ndarray, multi: list[np.ndarray], batch: int
) -> float:
    from uniembed.retrieval.index import Index

    index = Index.create(path, embedder, thumbnails=False)
    ids = [f"page-{n}" for n in range(len(dense))]
    started = time.perf_counter()
    index.add_vectors(ids, dense, multi, kinds=["image"] * len(ids), batch_items=batch)
    seconds = time.perf_counter() - started
    index.close()
    return seconds


def from_file(path: Path, embedder: Any, parquet: Path, batch: int) -> float:
    from uniembed.retrieval.index import Index
    from uniembed.retrieval.stored import add_embeddings_file

    index = Index.create(path, embedder, thumbnails=False)
    started = time.perf_counter()
    add_embeddings_file(index, parquet, batch_items=batch)
    seconds = time.perf_counter() - started
    index.close()
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16, help="pages per store operation")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.pages, args.tokens, args.rounds = 40, 32, 1
    import uniembed
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    dense, multi = synthetic(args.pages, args.tokens)
    rates: dict[str, list[float]] = {
        "store (baseline)": [],
        "add_vectors": [],
        "from-embeddings": [],
    }
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        embedder = uniembed.load(write_tiny_jina_v4(work / "tiny-v4"), device="cpu")
        parquet = work / "pages.parquet"
        write_parquet(parquet, embedder.info.name, dense, multi)
        for round_ in range(args.rounds):
            runs = {
                "store (baseline)": lambda p: store_baseline(p, dense, multi, args.batch),
                "add_vectors": lambda p: through_index(p, embedder, dense, multi, args.batch),
                "from-embeddings": lambda p: from_file(p, embedder, parquet, args.batch),
            }
            for name, run in runs.items():
                location = work / f"{name.split()[0]}-{round_}"
                rates[name].append(args.pages / run(location))
                shutil.rmtree(location, ignore_errors=True)
                print(f"round {round_} {name}: {rates[name][-1]:.1f} pages/s", file=sys.stderr)
    baseline = statistics.median(rates["store (baseline)"])
    results = {
        "pages": args.pages,
        "tokens": args.tokens,
        "batch": args.batch,
        "rounds": args.rounds,
        "pages_per_s": {name: statistics.median(values) for name, values in rates.items()},
        "ratio_to_store": {
            name: statistics.median(values) / baseline for name, values in rates.items()
        },
        "all_rates": rates,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("| path | pages/s (median) | ratio to the bare store write |")
    print("|---|---|---|")
    for name in rates:
        print(
            f"| {name} | {results['pages_per_s'][name]:.1f} | "
            f"{results['ratio_to_store'][name]:.2f} |"
        )
    return results


if __name__ == "__main__":
    main()
