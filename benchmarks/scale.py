"""Corpus scale: an embedded index of DOCS x TOKENS synthetic multi-vectors built, reopened and
searched on this machine, without the corpus ever being in memory.

    python benchmarks/scale.py --docs 100000 --tokens 800     # pages (BENCHMARKS.md)
    python benchmarks/scale.py --docs 1000000 --tokens 64     # passages (BENCHMARKS.md)
    python benchmarks/scale.py --quick                        # seconds: the suite's smoke test
    python benchmarks/scale.py --from-embeddings --codecs int8 binary   # the Parquet entry point

The corpus is :func:`uniembed.testing.corpus.synthetic_corpus`'s, generated block by block: each
block is written through :class:`~uniembed.retrieval.retriever.Retriever` (as ``Index.add_vectors``
writes) and scored against every query by exact MaxSim in torch while it is in memory, so the
exact top 10 (the ground truth) never needs the corpus again. With ``--from-embeddings`` the blocks
go into a Parquet file through ``uniembed embed``'s writer instead (not timed), and the whole file
into the index through ``Index.add_embeddings_file`` (``uniembed index --from-embeddings``: read
ahead on a thread, checked, batched), timed. Measured: ingest pages/s (beside
the disk's ceiling: plain synced writes of the same bytes, sampled between the blocks), the
index's bytes on disk at its peak during ingest (sampled after every block) and after close, both
against the token codes' bytes; then, in a fresh process, the time to open the index, its RSS
after opening, and per mode p50/p99 latency, recall@10 of the document each query was drawn from
and overlap@10 with the exact top 10 (its share of exact's recall).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from uniembed.core.codecs import make_codec
from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Layout, Point, point_id
from uniembed.retrieval.stores import create_store, open_store

K = 10
DIM = 128
RAW_EVERY = 5  # blocks between two samples of the disk's synced write rate
CONCEPTS, PER_DOC = 4096, 8


def disk_usage(path: Path) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks)."""
    return sum(
        (Path(root) / name).stat().st_blocks * 512
        for root, _, names in os.walk(path)
        for name in names
    )


class Corpus:
    """The synthetic corpus's generator, by blocks (see :mod:`uniembed.testing.corpus`)."""

    def __init__(self, docs: int, tokens: int, queries: int, seed: int = 0) -> None:
        self.docs, self.tokens = docs, tokens
        generator = torch.Generator().manual_seed(seed)
        unit = torch.nn.functional.normalize
        self.vocabulary = unit(torch.randn(CONCEPTS, DIM, generator=generator), dim=-1)
        self.projection = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator))[0]
        self.chosen = torch.randint(0, CONCEPTS, (docs, PER_DOC), generator=generator)
        self.targets = torch.randint(0, docs, (queries,), generator=generator)
        picks = torch.randint(0, PER_DOC // 2, (queries, 20), generator=generator)
        rows = self.vocabulary[torch.gather(self.chosen[self.targets], 1, picks)]
        rows = rows + torch.randn(queries, 20, DIM, generator=generator) / DIM**0.5
        self.queries = unit(rows, dim=-1)
        self.query_dense = unit(self.queries.mean(1) @ self.projection, dim=-1)
        self.generator = generator

    def block(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Documents ``start … stop - 1``: (m, tokens, dim) float16 and (m, dim) dense."""
        unit = torch.nn.functional.normalize
        g = self.generator
        picks = torch.randint(0, PER_DOC, (stop - start, self.tokens), generator=g)
        rows = self.vocabulary[torch.gather(self.chosen[start:stop], 1, picks)]
        rows = unit(rows + torch.randn(rows.shape, generator=g) / DIM**0.5, dim=-1)
        noise = 0.3 * torch.randn(stop - start, DIM, generator=g) / DIM**0.5
        dense = unit(rows.mean(1) @ self.projection + noise, dim=-1)
        return rows.half(), dense


class RawWrites:
    """Plain writes with a sync after each into a scratch file in ``directory``, timed: the disk's
    ceiling for an ingest that must make its codes durable. Sampled beside the ingest (every
    ``RAW_EVERY`` blocks, the block's code bytes), because this (virtual) disk bursts and then
    throttles: one measurement after the ingest read 1,182 MB/s where the sustained rate beside it
    was ~310. Appended, not rewritten in place: rewriting one region read 1,868 MB/s."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "raw-write"
        self.data = b""
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.bytes = 0
        self.seconds = 0.0

    def write(self, size: int) -> None:
        if size > len(self.data):
            self.data = os.urandom(size)
        began = time.perf_counter()
        os.pwrite(self.fd, memoryview(self.data)[:size], self.bytes)  # appended, as the codes are
        os.fdatasync(self.fd)
        self.seconds += time.perf_counter() - began
        self.bytes += size

    @property
    def rate(self) -> float:
        """Bytes/s over every sample."""
        return self.bytes / self.seconds

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


def exact_scores(queries: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
    """(queries, docs) MaxSim of every query against a block of equal-length documents, in one
    float32 matrix product (the ground truth; checked against ``core.scores.maxsim`` in tests)."""
    count, query_tokens, dim = queries.shape
    docs, tokens, _ = multi.shape
    sims = multi.reshape(-1, dim).float() @ queries.reshape(-1, dim).T  # (docs·tokens, q·qt)
    best = sims.reshape(docs, tokens, count, query_tokens).amax(dim=1)  # (docs, q, qt)
    return best.sum(-1).T


def build(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Write the corpus into a new index at ``path``; the ingest figures and the exact top 10."""
    corpus = Corpus(args.docs, args.tokens, args.queries)
    truth = GroundTruth(corpus.queries)
    blocks = truth.scored(corpus, block=-(-args.block_rows // args.tokens))  # as the index batches
    ingest = ingest_file if args.from_embeddings else ingest_blocks
    built = ingest(args, path, blocks)
    return {
        "docs": args.docs,
        "tokens": args.tokens,
        "codecs": args.codecs,
        "path": "Index.add_embeddings_file" if args.from_embeddings else "Retriever.write",
        **built,
        "queries": corpus.queries.tolist(),
        "query_dense": corpus.query_dense.tolist(),
        "targets": corpus.targets.tolist(),
        "exact_top10": truth.best_ids.tolist(),
    }


class GroundTruth:
    """The exact top 10 of every query, kept up to date block by block."""

    def __init__(self, queries: torch.Tensor) -> None:
        self.queries = queries
        self.best = torch.full((len(queries), K), float("-inf"))
        self.best_ids = torch.zeros((len(queries), K), dtype=torch.long)

    def scored(
        self, corpus: Corpus, block: int
    ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """The corpus's blocks (start, stop, multi, dense), each scored before it is yielded."""
        for start in range(0, corpus.docs, block):
            stop = min(corpus.docs, start + block)
            multi, dense = corpus.block(start, stop)
            scores = exact_scores(self.queries, multi)  # (queries, m)
            merged = torch.cat([self.best, scores], dim=1)
            ids = torch.cat([self.best_ids, torch.arange(start, stop).expand(len(scores), -1)], 1)
            self.best, order = merged.topk(K, dim=1)
            self.best_ids = torch.gather(ids, 1, order)
            yield start, stop, multi, dense


def ingest_blocks(args: argparse.Namespace, path: Path, blocks: Iterator) -> dict[str, Any]:
    """Each block written through the index's writer as it is generated (the writes timed)."""
    layout = Layout.build(DIM, DIM, {}, codecs=args.codecs)
    retriever = Retriever.open(create_store(path, layout, {}))
    peak = writing = 0.0
    raw = RawWrites(path.parent)
    for number, (start, stop, multi, dense) in enumerate(blocks):
        points = [
            Point(point_id(f"doc-{n}", None), dense[n - start].tolist(), None, {"id": f"doc-{n}"})
            for n in range(start, stop)
        ]
        written = retriever.tokens.nbytes
        began = time.perf_counter()
        retriever.write([p.payload["id"] for p in points], points, list(multi))
        writing += time.perf_counter() - began
        if number % RAW_EVERY == 0:
            raw.write(retriever.tokens.nbytes - written)
        peak = max(peak, disk_usage(path))
        if number % 20 == 0:
            report(stop, args.docs, stop / writing)
    codes = retriever.tokens.nbytes
    raw.close()
    began = time.perf_counter()
    retriever.store.optimize()
    optimize = time.perf_counter() - began
    retriever.close()
    return finished(args, path, args.docs / writing, raw.rate, codes, peak, optimize)


def ingest_file(args: argparse.Namespace, path: Path, blocks: Iterator) -> dict[str, Any]:
    """The blocks written to a Parquet file by ``uniembed embed``'s writer first (not timed), then
    the whole file into a new index by ``Index.add_embeddings_file`` (what ``uniembed index
    --from-embeddings`` runs), timed, the disk's ceiling sampled beside it between its writes."""
    import uniembed
    from uniembed.bulk.outputs import EmbeddedRecord, Entry, PartsWriter
    from uniembed.retrieval.index import Index
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    embedder = uniembed.load(
        write_tiny_jina_v4(path.parent / "tiny-v4", size={"hidden_size": DIM}), device="cpu"
    )
    parquet = path.parent / "pages.parquet"
    manifest = {"model": embedder.info.name, "task": "retrieval.passage", "dimensions": None}
    writer = PartsWriter(parquet, "parquet", {"format": "parquet", **manifest, "vectors": "both"})
    for start, stop, multi, dense in blocks:
        writer.write(
            [
                EmbeddedRecord(
                    f"doc-{n}",
                    dense[n - start].numpy(),
                    0,
                    multi[n - start].numpy(),
                    Entry(f"doc-{n}", None, "image", None, {}, None),
                )
                for n in range(start, stop)
            ]
        )
        if start // (stop - start) % 20 == 0:
            print(f"  {stop}/{args.docs} docs into {parquet.name}", file=sys.stderr)
    writer.finish()
    per_token = sum(make_codec(name, DIM).bytes_per_token for name in args.codecs)
    index = Index.create(path, embedder, thumbnails=False, codecs=args.codecs)
    raw = RawWrites(path.parent)
    state = {"docs": 0, "writes": 0, "peak": 0, "sampling_s": 0.0}

    def written(docs: int) -> None:  # after each write of the index: sample disk and ceiling
        if state["writes"] % RAW_EVERY == 0:
            raw.write(docs * args.tokens * per_token)
        began = time.perf_counter()
        state["peak"] = max(state["peak"], disk_usage(path))
        state["sampling_s"] += time.perf_counter() - began
        state["docs"] += docs
        state["writes"] += 1

    began = time.perf_counter()
    index.add_embeddings_file(parquet, on_written=written)
    seconds = time.perf_counter() - began - raw.seconds - state["sampling_s"]
    assert state["docs"] == args.docs, state
    raw.close()
    began = time.perf_counter()
    index.optimize()
    optimize = time.perf_counter() - began
    index.close()
    parquet.unlink()
    codes = args.docs * args.tokens * per_token
    return finished(args, path, args.docs / seconds, raw.rate, codes, state["peak"], optimize)


def finished(
    args: argparse.Namespace,
    path: Path,
    rate: float,
    disk_rate: float,
    codes: int,
    peak: float,
    optimize: float,
) -> dict[str, Any]:
    after = disk_usage(path)
    return {
        "ingest_docs_per_s": rate,
        "raw_write_mb_s": disk_rate / 1e6,
        "ingest_ceiling_docs_per_s": disk_rate / (codes / args.docs),  # the codes' bytes alone
        "hnsw_build_s": optimize,
        "token_code_bytes": codes,
        "disk_peak_over_codes": peak / codes,
        "disk_after_close_over_codes": after / codes,
        "disk_after_close_bytes": after,
        "build_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def report(done: int, docs: int, rate: float) -> None:
    rss = _rss() / 2**20
    print(f"  {done}/{docs} docs, {rate:.0f} docs/s, RSS {rss:.0f} MB", file=sys.stderr)


def search(path: Path, built: dict[str, Any], modes: list[str], exact_queries: int) -> dict:
    """In this (fresh) process: open, RSS, then every mode's latency and quality."""
    rss_before = _rss()
    began = time.perf_counter()
    retriever = Retriever.open(open_store(path))
    opened = time.perf_counter() - began
    rss_open = _rss()
    queries = torch.tensor(built["queries"])
    dense = torch.tensor(built["query_dense"])
    rows = []
    for spec in modes:
        mode, _, candidates = spec.partition(":")
        count = exact_queries if mode == "multivector" else len(queries)

        def run(q: int, mode: str = mode, candidates: int = int(candidates or 0)) -> list[int]:
            found = retriever.search(
                dense[q], queries[q], K, mode=mode, candidates=candidates, payload=["id"]
            )
            return [int(f.payload["id"].split("-")[1]) for f in found]

        began = time.perf_counter()
        run(count % len(queries))  # a first, cold query (not counted)
        first = time.perf_counter() - began
        latencies, hits, overlap = [], 0, 0
        for q in range(count):
            began = time.perf_counter()
            ranked = run(q)
            latencies.append(time.perf_counter() - began)
            hits += built["targets"][q] in ranked
            overlap += len(set(ranked) & set(built["exact_top10"][q]))
        rows.append(
            {
                "mode": spec,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * max(latencies),
                "cold_first_ms": 1000 * first,
                "recall@10": hits / count,
                "overlap@10": overlap / (K * count),
                "queries": count,
            }
        )
        print(f"  {rows[-1]}", file=sys.stderr)
    retriever.close()
    return {
        "open_s": opened,
        "rss_after_open_mb": rss_open / 2**20,
        "rss_before_mb": rss_before / 2**20,
        "modes": rows,
    }


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=800)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--exact-queries", type=int, default=3, help="queries of the full scan")
    parser.add_argument("--codecs", nargs="+", default=["float16", "binary"])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["multivector", "dense", "two-stage:100", "two-stage:300", "binary:300"],
    )
    parser.add_argument("--block-rows", type=int, default=131072, help="token rows per write")
    parser.add_argument(
        "--from-embeddings",
        action="store_true",
        help="ingest a Parquet file of `uniembed embed` through Index.add_embeddings_file",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the index is built (default: a temp dir)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--search-only", type=Path, help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.tokens, args.queries, args.exact_queries = 400, 16, 5, 2
        args.modes = ["multivector", "two-stage:50", "binary:50"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(dir=args.workdir))
    path = workdir / "index"
    try:
        print(f"[{args.docs}x{args.tokens}] building", file=sys.stderr)
        built = build(args, path)
        (workdir / "built.json").write_text(json.dumps(built))
        script = Path(__file__).resolve()
        command = [
            sys.executable,
            str(script),
            "--search-only",
            str(workdir),
            "--modes",
            *args.modes,
        ]
        command += ["--exact-queries", str(args.exact_queries)]
        subprocess.run(
            command, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        )
        searched = json.loads((workdir / "searched.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        k: v
        for k, v in built.items()
        if k not in ("queries", "query_dense", "exact_top10", "targets")
    }
    results.update(searched)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


def search_only(argv: list[str]) -> None:
    args = parse_args(argv)
    built = json.loads((args.search_only / "built.json").read_text())
    searched = search(args.search_only / "index", built, args.modes, args.exact_queries)
    (args.search_only / "searched.json").write_text(json.dumps(searched))


if __name__ == "__main__":
    if "--search-only" in sys.argv:
        search_only(sys.argv[1:])
    else:
        main()
