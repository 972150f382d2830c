"""Ingest of a Parquet file of stored embeddings: `Index.add_embeddings_file` as it runs now (a
pipeline) against one write at a time (as it ran before), in one process.

    python benchmarks/ingest_pipeline.py                 # 8,000 pages x 800 vectors, int8 + binary
    python benchmarks/ingest_pipeline.py --pages 1640    # a minute

The same synthetic pages are written once by `uniembed embed`'s own Parquet writer (`PartsWriter`,
float16 rows as bytes), then into fresh indexes (a tiny v4 model's layout, ``--codecs``), the two
ways taking turns, the order alternating round by round:

* one write at a time, rows gathered (before): the file's batches read and built on a thread, each
  one's rows gathered into the staging buffer, encoded, written and synced, and stored before the
  next is encoded;
* one write at a time, encoded where the rows lie (Arrow's buffers: a few runs a write);
* pipeline (now, `add_embeddings_file`): reading, encoding and writing on three threads; each
  write's rows encoded where they lie in Arrow's buffers; the next write's codes sent to disk
  while the last one's store operation runs.

Prints pages/s of each round and the median ratio of each way to the first.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_file(path: Path, model_name: str, pages: int, tokens: int) -> None:
    """``pages`` pages of ``tokens`` unit float16 vectors, as ``uniembed embed`` writes them."""
    from uniembed.bulk.outputs import EmbeddedRecord, Entry, PartsWriter

    rng = np.random.default_rng(0)
    manifest = {"model": model_name, "task": "retrieval.passage", "dimensions": None}
    writer = PartsWriter(path, "parquet", {"format": "parquet", **manifest, "vectors": "both"})
    for start in range(0, pages, 164):
        records = []
        for n in range(start, min(pages, start + 164)):
            multi = rng.standard_normal((tokens, 128), dtype=np.float32)
            multi /= np.linalg.norm(multi, axis=1, keepdims=True)
            dense = rng.standard_normal(128).astype(np.float32)
            entry = Entry(f"doc-{n}", None, "image", None, {}, None)
            records.append(
                EmbeddedRecord(f"doc-{n}", dense / np.linalg.norm(dense), 0, multi, entry)
            )
        writer.write(records)
    writer.finish()


def one_at_a_time(index, path: Path) -> None:
    """`add_embeddings_file` before the pipeline: batches read and built ahead, then each one
    encoded and written (`Retriever.write`) before the next."""
    from uniembed.core.iteration import read_ahead

    for write in read_ahead(index._file_writes(path, None)):
        index.retriever.write(write.doc_ids, write.points, write.multivectors)


def gathered(index, path: Path) -> None:
    """One write at a time, every write's rows gathered first (no runs encoded in place)."""
    from uniembed.retrieval import token_files

    runs, token_files.MAX_RUNS = token_files.MAX_RUNS, 0
    try:
        one_at_a_time(index, path)
    finally:
        token_files.MAX_RUNS = runs


def pipeline(index, path: Path) -> None:
    index.add_embeddings_file(path)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=8000)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--codecs", nargs="+", default=["int8", "binary"])
    parser.add_argument(
        "--workdir", type=Path, help="where the file and indexes go (default: temp)"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="ingest-pipeline-", dir=args.workdir))
    try:
        return measure(folder, args)
    finally:
        shutil.rmtree(folder)


def measure(folder: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    import uniembed
    from uniembed.retrieval.index import Index
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    model = uniembed.load(
        write_tiny_jina_v4(folder / "tiny-v4", size={"hidden_size": 128}), device="cpu"
    )
    path = folder / "pages.parquet"
    write_file(path, model.info.name, args.pages, args.tokens)
    ways = {
        "one at a time, gathered (before)": gathered,
        "one at a time, in place": one_at_a_time,
        "pipeline (now)": pipeline,
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(args.rounds):
        names = list(ways) if round_ % 2 == 0 else list(reversed(ways))  # alternating order
        for name in names:
            index_path = folder / "index"
            index = Index.create(index_path, model, thumbnails=False, codecs=args.codecs)
            began = time.perf_counter()
            ways[name](index, path)
            seconds = time.perf_counter() - began
            assert index.count() == args.pages, name
            index.close()
            shutil.rmtree(index_path)
            rates[name].append(args.pages / seconds)
            print(f"round {round_ + 1}: {name:34s} {args.pages / seconds:7.0f} pages/s", flush=True)
    before = rates[next(iter(ways))]
    for name in list(ways)[1:]:
        ratios = [n / b for b, n in zip(before, rates[name], strict=True)]
        print(
            f"{name} / before: median {statistics.median(ratios):.2f} "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return rates


if __name__ == "__main__":
    main()
