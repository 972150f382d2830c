"""Peak memory of windowed late chunking: bounded by the window, not by the document.

Each configuration runs in a fresh Python subprocess (so no allocator state or earlier peak carries
over). The child loads a random jina-embeddings-v3 snapshot, builds the document, records its RSS
(``/proc/self/statm``), late-chunks the document with ``Embedder.embed_document`` (one chunk per
sentence), then reads its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The table shows
``peak - RSS before the run``: the memory the late-chunking call itself needed at its worst, as the
operating system saw it (model weights, tokenizer and the document text are in the baseline).
``ru_maxrss`` is the peak of the whole process, so the table also shows the peak before the run
(``load peak``); the delta is meaningful because the run's peak exceeds it in every row (check it
when changing sizes). Linux only (``ru_maxrss`` in KiB).

Windows are batched like any other sequences: up to ``--token-budget`` padded tokens per forward
pass (uniembed's default 16384), so the working set is bounded by the budget and the window, never
by the document length.

    python benchmarks/late_chunking_memory.py             # tiny v3, both sweeps (a few minutes)
    python benchmarks/late_chunking_memory.py --size mid  # hidden 384, 6 layers (slower)
    python benchmarks/late_chunking_memory.py --token-budget 2048
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SIZES = {
    "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64},
    "mid": {"hidden_size": 384, "num_layers": 6, "num_heads": 6, "intermediate_size": 1536},
}
SENTENCE_WORDS = (
    "the",
    "sun",
    "light",
    "is",
    "for",
    "solar",
    "panel",
    "cells",
    "and",
    "the",
    "world",
    "of",
    "retrieval",
    "documents",
    "how",
    "do",
    "panels",
    "work",
    "into",
    "electricity",
    "evidence",
)


@dataclass(frozen=True)
class Config:
    """One measured run: a document of about ``tokens`` tokens, late-chunked in ``window``
    windows."""

    tokens: int
    window: int
    overlap: int
    token_budget: int


def make_document(embedder, tokens: int) -> str:
    """Sentences of 6–17 words repeated until the document has at least ``tokens`` tokens."""
    sentences = []
    for index in range(max(1, tokens // 8)):
        words = [
            SENTENCE_WORDS[(index * 7 + k * 3) % len(SENTENCE_WORDS)] for k in range(6 + index % 12)
        ]
        sentences.append(" ".join(words).capitalize() + ".")
    text = " ".join(sentences)
    while len(embedder.tokenize(text).ids) < tokens:
        text = f"{text} {text}"
    return _cut_to_tokens(embedder, text, tokens)


def _cut_to_tokens(embedder, text: str, tokens: int) -> str:
    """The longest prefix of ``text`` ending at a sentence with at most ``tokens`` tokens."""
    offsets = embedder.tokenize(text).offsets
    end = offsets[min(tokens, len(offsets) - 1)][0]
    cut = text.rfind(".", 0, end)
    return text[: cut + 1] if cut > 0 else text[:end]


def rss_kib() -> int:
    """Resident set size now, in KiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(snapshot: Path, config: Config) -> dict:
    """Run in the child: memory and time of one ``embed_document`` call."""
    import torch

    import uniembed
    from uniembed.chunking import sentence_chunker

    embedder = uniembed.load(snapshot, token_budget=config.token_budget)
    text = make_document(embedder, config.tokens)
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = rss_kib()
    start = time.perf_counter()
    vectors = embedder.embed_document(
        text,
        chunker=sentence_chunker(),
        task="retrieval.passage",
        window=config.window,
        overlap=config.overlap,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert bool(torch.isfinite(vectors).all()), "late chunking returned non-finite vectors"
    return {
        "doc_tokens": len(embedder.tokenize(text).ids),
        "chunks": int(vectors.shape[0]),
        "before_mib": before / 1024,
        "load_peak_mib": load_peak / 1024,
        "peak_mib": peak / 1024,
        "delta_mib": (peak - before) / 1024,
        "seconds": seconds,
    }


def run_child(snapshot: Path, config: Config, threads: int) -> dict:
    """:func:`measure` in a fresh interpreter; its JSON result."""
    payload = json.dumps({"snapshot": str(snapshot), "config": config.__dict__})
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    completed = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child for {config} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: list[tuple[Config, dict]]) -> None:
    print(f"\n{title}")
    header = (
        "doc tokens",
        "window",
        "overlap",
        "budget",
        "chunks",
        "RSS before",
        "load peak",
        "run peak",
        "peak-before",
        "seconds",
    )
    print("".join(f"{h:>12}" for h in header))
    for config, r in rows:
        values = (
            r["doc_tokens"],
            config.window,
            config.overlap,
            config.token_budget,
            r["chunks"],
            f"{r['before_mib']:.0f} MiB",
            f"{r['load_peak_mib']:.0f} MiB",
            f"{r['peak_mib']:.0f} MiB",
            f"{r['delta_mib']:.0f} MiB",
            f"{r['seconds']:.1f}",
        )
        print("".join(f"{v:>12}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="tiny", help="random v3 snapshot size"
    )
    parser.add_argument(
        "--documents", default="12000,25000,50000,100000", help="document sizes in tokens"
    )
    parser.add_argument("--window", type=int, default=2048, help="window for the document sweep")
    parser.add_argument("--overlap", type=int, default=256, help="overlap for both sweeps")
    parser.add_argument(
        "--windows", default="1024,2048,4096,8192", help="windows for the window sweep"
    )
    parser.add_argument(
        "--fixed-document", type=int, default=25000, help="document tokens for the window sweep"
    )
    parser.add_argument(
        "--token-budget", type=int, default=16384, help="padded tokens per forward pass"
    )
    parser.add_argument("--threads", type=int, default=2, help="OMP threads in each child")
    args = parser.parse_args()
    if args.child:
        payload = json.loads(args.child)
        print(json.dumps(measure(Path(payload["snapshot"]), Config(**payload["config"]))))
        return

    from uniembed.testing.jina_v3 import write_tiny_jina_v3

    with tempfile.TemporaryDirectory() as tmp:
        snapshot = write_tiny_jina_v3(Path(tmp) / "v3", **SIZES[args.size])
        by_document = [
            Config(int(t), args.window, args.overlap, args.token_budget)
            for t in args.documents.split(",")
        ]
        by_window = [
            Config(args.fixed_document, int(w), args.overlap, args.token_budget)
            for w in args.windows.split(",")
        ]
        print(
            f"random jina-embeddings-v3 '{args.size}' {SIZES[args.size]}, {args.threads} threads, "
            f"one fresh subprocess per row; memory in MiB of RSS"
        )
        print_table(
            f"Document sweep (window {args.window}, overlap {args.overlap})",
            [(c, run_child(snapshot, c, args.threads)) for c in by_document],
        )
        print_table(
            f"Window sweep ({args.fixed_document}-token document, overlap {args.overlap})",
            [(c, run_child(snapshot, c, args.threads)) for c in by_window],
        )


if __name__ == "__main__":
    main()
