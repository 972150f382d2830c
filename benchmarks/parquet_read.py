"""Reading `uniembed embed`'s Parquet multi-vectors: pyarrow's defaults against how the file is
written and read now, in one run.

    python benchmarks/parquet_read.py                 # the BENCHMARKS.md run (1,640 pages)
    python benchmarks/parquet_read.py --pages 164     # seconds

The same synthetic pages (``--tokens`` × 128 float16 values as bytes, a 128-d single vector and an
id each; row groups of 164 pages, as the writer's parts) are written twice: with pyarrow's
defaults (snappy, a dictionary tried, min/max statistics on every column) and with the options of
``uniembed.bulk.outputs`` (vector columns plain). Each file is read in 64-page batches
(``ParquetFile.iter_batches``), with ``pre_buffer`` on (pyarrow's default) and off (what
``retrieval.stored.read_embeddings`` does), rounds alternating, best of ``--rounds``; then
``read_embeddings`` itself (bytes → checked float16 page arrays) on the plain file. Printed:
pages/s, the ratio to the first row (the defaults, as the reader was), and the most Arrow memory
held while reading.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def write(path: Path, pages: int, tokens: int, options: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("tokens", pa.int32()),
            ("embeddings", pa.large_binary()),
        ]
    )
    with pq.ParquetWriter(path, schema, **options) as writer:
        for start in range(0, pages, 164):
            count = min(164, pages - start)
            rows = rng.standard_normal((count, tokens * 128)).astype(np.float16) / 11
            table = pa.table(
                {
                    "id": [f"page-{n}" for n in range(start, start + count)],
                    "embedding": rng.standard_normal((count, 128)).astype(np.float32).tolist(),
                    "tokens": [tokens] * count,
                    "embeddings": pa.array([row.tobytes() for row in rows], pa.large_binary()),
                },
                schema=schema,
            )
            writer.write_table(table)


def timed_read(batches: Callable[[], Iterable], count: Callable[[object], int]) -> tuple:
    """Pages/s of one pass and the most Arrow memory held during it."""
    import pyarrow as pa

    before, peak, pages = pa.total_allocated_bytes(), 0, 0
    started = time.perf_counter()
    for batch in batches():
        pages += count(batch)
        peak = max(peak, pa.total_allocated_bytes() - before)
    return pages / (time.perf_counter() - started), peak


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1640)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parquet-read-") as temporary:
        return measure(Path(temporary), args)


def measure(folder: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Write both files into ``folder``, read them every way, print and return the figures."""
    import pyarrow.parquet as pq

    from uniembed.bulk.outputs import parquet_options
    from uniembed.retrieval.stored import read_embeddings

    files = {"pyarrow defaults": folder / "defaults.parquet", "plain vectors": folder / "p.parquet"}
    columns = ["id", "embedding", "tokens", "embeddings"]
    write(files["pyarrow defaults"], args.pages, args.tokens, {})
    write(files["plain vectors"], args.pages, args.tokens, parquet_options(columns))
    cases: dict[str, tuple[Callable[[], Iterable], Callable[[object], int]]] = {}
    for name, path in files.items():
        for pre_buffer in (True, False):
            cases[f"{name}, pre_buffer={pre_buffer}"] = (
                lambda path=path, pre_buffer=pre_buffer: pq.ParquetFile(
                    path, pre_buffer=pre_buffer
                ).iter_batches(batch_size=64, columns=columns),
                lambda batch: batch.num_rows,
            )
    cases["read_embeddings (plain vectors; checked float16 pages)"] = (
        lambda: read_embeddings(
            files["plain vectors"], with_multivectors=True, multivector_dim=128
        ),
        lambda batch: len(batch.ids),
    )
    for name, (batches, count) in cases.items():  # every read sees every page
        assert sum(count(batch) for batch in batches()) == args.pages, name
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.rounds):
        for name, (batches, count) in cases.items():
            rate, peak = timed_read(batches, count)
            if rate > best.get(name, (0.0, 0))[0]:
                best[name] = (rate, max(peak, best.get(name, (0, 0))[1]))
    size = files["plain vectors"].stat().st_size / 2**20
    print(f"{args.pages} pages x {args.tokens} float16 vectors ({size:.0f} MiB a file), "
          f"best of {args.rounds} alternating rounds")  # fmt: skip
    baseline = next(iter(best.values()))[0]
    print(f"{'read':58s} {'pages/s':>8s} {'ratio':>6s} {'Arrow MiB held':>15s}")
    for name, (rate, peak) in best.items():
        print(f"{name:58s} {rate:8.0f} {rate / baseline:6.2f} {peak / 2**20:15.0f}")
    return {
        name: {"pages_per_s": rate, "arrow_bytes_held": peak} for name, (rate, peak) in best.items()
    }


if __name__ == "__main__":
    main()
