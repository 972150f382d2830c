"""Token-file writes: each write's vectors gathered into one reused staging buffer (now) against a
fresh array per write (before), in one process.

    python benchmarks/staging_buffer.py                  # 40 blocks of 164 pages x 800 vectors
    python benchmarks/staging_buffer.py --pages 163      # just under glibc's 32 MiB mmap ceiling

Two fresh embedded indexes (float16 + binary codes) take turns on the same blocks of float16 pages,
the order alternating block by block, so both see the same load of a shared machine and the same
state of its disk. Prints pages/s in total and the median of the per-block speed ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Layout, Point, point_id
from uniembed.retrieval.stores import create_store
from uniembed.retrieval.token_files import BufferPool, StagingBuffer, WriteBuffers


class FreshArrays(StagingBuffer):
    """The write path before the staging buffer: a new array for every write."""

    def gather(self, arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype, copy=False)


class FreshArraysPool(BufferPool):
    """Write buffers that gather each write's vectors into a new array (the pages here are
    separate arrays, so every write gathers)."""

    def take(self) -> WriteBuffers:
        buffers = super().take()
        buffers.vectors = FreshArrays()
        return buffers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=164, help="pages per block (one write)")
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--workdir", type=Path, help="where the indexes go (default: a temp dir)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    multi = [
        torch.from_numpy(rng.standard_normal((args.tokens, 128)).astype(np.float16))
        for _ in range(args.pages)
    ]
    dense = rng.standard_normal((args.pages, 128)).astype(np.float32)
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    layout = Layout.build(128, 128, {}, codecs=("float16", "binary"))
    paths = {"fresh array (before)": FreshArraysPool, "staging buffer (now)": None}
    retrievers = {}
    for n, (name, pool) in enumerate(paths.items()):
        retrievers[name] = Retriever.open(create_store(work / f"index-{n}", layout, {}))
        if pool is not None:
            retrievers[name].tokens._buffers = pool(retrievers[name].tokens.names)
    seconds: dict[str, list[float]] = {name: [] for name in retrievers}
    try:
        for block in range(args.blocks):
            names = list(retrievers) if block % 2 == 0 else list(reversed(retrievers))
            for name in names:
                ids = [f"{block}-{k}" for k in range(args.pages)]
                points = [
                    Point(point_id(i, None), dense[k].tolist(), None, {"id": i})
                    for k, i in enumerate(ids)
                ]
                began = time.perf_counter()
                retrievers[name].write(ids, points, multi)
                seconds[name].append(time.perf_counter() - began)
    finally:
        for retriever in retrievers.values():
            retriever.close()
        shutil.rmtree(work)
    for name, times in seconds.items():
        print(f"{name:22s} {args.pages * args.blocks / sum(times):7.0f} pages/s")
    before, now = seconds.values()
    ratios = [b / n for b, n in zip(before, now)]
    print(
        f"staging buffer / fresh array, per block: median {statistics.median(ratios):.2f} "
        f"(blocks {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
