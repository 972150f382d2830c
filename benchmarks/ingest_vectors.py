"""Ingest of stored embeddings: ``Index.add_vectors`` and ``uniembed index --from-embeddings``
against a raw write of the same vector bytes, in one run.

    python benchmarks/ingest_vectors.py --pages 3280 --tokens 800     # the BENCHMARKS.md run
    python benchmarks/ingest_vectors.py --quick                       # seconds: a smoke test

The same synthetic pages (a 64-d single vector and ``tokens`` × 128 float16 values each) go into
three fresh embedded indexes, block by block (``--block`` pages; default: what the index writes
and syncs together, ``stored.WRITE_TOKENS`` token vectors), the three paths taking turns on every
block (rotating who goes first), so that each block's three timings see the same load on a shared
machine; pages/s are totals, ratios the median of the per-block ratios:

* ``raw write (baseline)`` — as many bytes as the index's token codes of the pages (``--codecs``,
  default float16 + binary: 276 bytes per 128-d token) and their float32 single vectors, appended
  to one file, synced once per block: what the disk takes, with no index at all;
* ``add_vectors`` — ``Index.add_vectors`` from numpy arrays (checks, float16 rounding, payloads);
* ``from-embeddings`` — the next batch read from a Parquet file written by ``uniembed embed``'s
  own writer (``--vectors both``), then ``add_vectors``.

Then, timed once after the blocks, ``add_embeddings_file (whole file)`` — what ``uniembed index
--from-embeddings`` runs: the whole file into a fresh index, the next batch read on a thread while
the last one is written (its ratio is to the raw write's total time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WHOLE_FILE = "add_embeddings_file (whole file)"


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


def raw_write(fd: int, codes: bytes, dense: np.ndarray, pages: range) -> None:
    """Each page's code bytes and its single vector, then one sync."""
    for n in pages:
        os.write(fd, codes)
        os.write(fd, dense[n].astype(np.float32).tobytes())
    os.fdatasync(fd)


def code_bytes_per_token(codecs: list[str], dim: int = 128) -> int:
    from uniembed.core.codecs import make_codec

    return sum(make_codec(name, dim).bytes_per_token for name in codecs)


def run(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    """Seconds per block of each path."""
    import uniembed
    from uniembed.retrieval.index import Index
    from uniembed.retrieval.stored import read_embeddings
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    dense, multi = synthetic(args.pages, args.tokens)
    embedder = uniembed.load(write_tiny_jina_v4(work / "tiny-v4"), device="cpu")
    parquet = work / "pages.parquet"
    write_parquet(parquet, embedder.info.name, dense, multi)
    raw = os.open(work / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    direct = Index.create(work / "direct", embedder, thumbnails=False, codecs=args.codecs)
    from_file = Index.create(work / "file", embedder, thumbnails=False, codecs=args.codecs)
    codes = os.urandom(args.tokens * code_bytes_per_token(args.codecs))
    batches = read_embeddings(parquet, with_multivectors=True, batch_entries=args.block)
    ids = [f"page-{n}" for n in range(args.pages)]

    def baseline(pages: range) -> None:
        raw_write(raw, codes, dense, pages)

    def add_vectors(pages: range) -> None:
        chosen = slice(pages.start, pages.stop)
        direct.add_vectors(ids[chosen], dense[chosen], multi[chosen], batch_items=args.block)

    def file_batch(pages: range) -> None:
        batch = next(batches)
        assert len(batch.ids) == len(pages)
        from_file.add_vectors(
            batch.ids,
            batch.embeddings,
            batch.multivectors,
            **batch.options(),
            batch_items=args.block,
        )

    paths = {
        "raw write (baseline)": baseline,
        "add_vectors": add_vectors,
        "from-embeddings": file_batch,
    }
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for number, start in enumerate(range(0, args.pages, args.block)):
        pages = range(start, min(args.pages, start + args.block))
        names = list(paths)
        for name in names[number % 3 :] + names[: number % 3]:
            began = time.perf_counter()
            paths[name](pages)
            seconds[name].append(time.perf_counter() - began)
    whole = Index.create(work / "whole", embedder, thumbnails=False, codecs=args.codecs)
    began = time.perf_counter()
    whole.add_embeddings_file(parquet)  # the entry point itself: reading ahead on a thread
    seconds[WHOLE_FILE] = [time.perf_counter() - began]
    counts = (direct.count(), from_file.count(), whole.count())
    assert counts == (args.pages,) * 3, counts
    for closing in (direct, from_file, whole):
        closing.close()
    os.close(raw)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from uniembed.retrieval.stored import WRITE_TOKENS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=3280)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--block", type=int, help="pages per turn of each path (one write)")
    parser.add_argument("--codecs", nargs="+", default=["float16", "binary"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.pages, args.tokens, args.block = 48, 32, 16
    args.block = args.block or -(-WRITE_TOKENS // args.tokens)  # one write of the index
    with tempfile.TemporaryDirectory() as temporary:
        seconds = run(args, Path(temporary))
    baseline = seconds["raw write (baseline)"]
    results = {
        "pages": args.pages,
        "tokens": args.tokens,
        "codecs": args.codecs,
        "block": args.block,
        "pages_per_s": {name: args.pages / sum(s) for name, s in seconds.items()},
        "ratio_to_raw_write_per_block_median": {
            name: statistics.median(b / t for b, t in zip(baseline, s))
            for name, s in seconds.items()
            if name != WHOLE_FILE
        },
        "whole_file_ratio_to_raw_write_total": sum(baseline) / seconds[WHOLE_FILE][0],
        "seconds_per_block": seconds,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("| path | pages/s | ratio to the raw write (median of blocks) |")
    print("|---|---|---|")
    for name, ratio in results["ratio_to_raw_write_per_block_median"].items():
        print(f"| {name} | {results['pages_per_s'][name]:.1f} | {ratio:.2f} |")
    whole = results["whole_file_ratio_to_raw_write_total"]
    print(
        f"| {WHOLE_FILE} | {results['pages_per_s'][WHOLE_FILE]:.1f} | {whole:.2f} (of the total) |"
    )
    return results


if __name__ == "__main__":
    main()
