"""``uniembed eval`` on a few thousand passages of real text with the mid-size v4 checkpoint:
encoding throughput, the scoring time of every setting, and what the cache saves on a second run.

Corpus (shipped with every Python): the docstrings of the installed CPython standard library,
parsed with ``ast`` from its source files (nothing is imported) — one passage per documented module,
class or function with at least 20 words, cut to 60 words, the first ``--items`` in path order
(``test/``, ``idlelib/``, ``lib2to3/`` and ``site-packages`` left out). Queries (synthetic): for a
seeded sample of ``--queries`` passages, the documented object's qualified name with dots and
underscores as spaces (``shutil copytree``, ``json decoder JSONDecoder raw decode``); the relevant
passage is that object's docstring. The dataset is written as a BEIR folder and read back with the
BEIR reader, so the run goes through the path a user's does.

The weights are random (``uniembed.testing.jina_v4.MID``), so quality numbers mean nothing here;
the point is what each setting costs. The same process runs the evaluation twice over one cache: the
second run (other settings would do the same) must run no forward pass, and the ratio of the two
wall times is printed.

    python benchmarks/eval_settings.py --threads 1      # 2000 passages, 200 queries, all settings
    python benchmarks/eval_settings.py --items 500 --queries 50 --output /tmp/eval-bench
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PASSAGE_WORDS = 60
SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "turtledemo"}


def stdlib_passages(limit: int) -> list[tuple[str, str]]:
    """``(qualified name, docstring passage)`` from the standard library's source, in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        if SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for name, text in _documented(tree, module):
            words = text.split()
            if len(words) >= 20:
                found.append((name, " ".join(words[:PASSAGE_WORDS])))
                if len(found) == limit:
                    return found
    return found


def _documented(tree: ast.Module, module: str) -> list[tuple[str, str]]:
    out = [(module, ast.get_docstring(tree) or "")]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((f"{module}.{node.name}", ast.get_docstring(node) or ""))
    return out


def query_text(name: str) -> str:
    """``json.decoder.JSONDecoder.raw_decode`` → ``json decoder JSONDecoder raw decode``."""
    return re.sub(r"[._]+", " ", name).strip()


def write_dataset(folder: Path, items: int, queries: int, seed: int) -> None:
    passages = stdlib_passages(items)
    if len(passages) < items:
        sys.exit(f"only {len(passages)} documented objects found; ask for fewer --items")
    names = {}
    for index, (name, _) in enumerate(passages):
        names.setdefault(name, index)  # a name documented twice: its first passage is the answer
    chosen = random.Random(seed).sample(sorted(names.values()), queries)
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for index, (_, text) in enumerate(passages):
            corpus.write(json.dumps({"_id": f"p{index}", "title": "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as lines:
        for index in chosen:
            lines.write(
                json.dumps({"_id": f"q{index}", "text": query_text(passages[index][0])}) + "\n"
            )
    rows = "".join(f"q{index}\tp{index}\t1\n" for index in chosen)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--size",
        choices=["tiny", "mid", "full"],
        default="mid",
        help="random v4 checkpoint size (full: the published sizes, for a GPU)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, …")
    parser.add_argument("--setting", action="append", help="setting spec (repeat); default: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write report.json and the chart here")
    args = parser.parse_args()

    import torch

    import uniembed
    from uniembed.evaluation import EncodingCache, EvalConfig, evaluate_retrieval, load_dataset
    from uniembed.evaluation.report import write_report
    from uniembed.testing import jina_v4

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_dataset(work / "stdlib-docstrings", args.items, args.queries, args.seed)
        data = load_dataset(work / "stdlib-docstrings")
        model = uniembed.load(
            jina_v4.write_tiny_jina_v4(work / args.size, size=getattr(jina_v4, args.size.upper())),
            device=args.device,
            name=f"random-v4-{args.size}",
        )
        config = EvalConfig(settings=args.setting or ["all"], k_values=[1, 5, 10, 100])
        cache = EncodingCache(work / "cache")
        print(
            f"python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; "
            f"{len(data.corpus_ids)} passages, {len(data.query_ids)} queries",
            flush=True,
        )

        started = time.perf_counter()
        first = evaluate_retrieval(model, data, config, cache=cache)
        first_seconds = time.perf_counter() - started
        batches = model.engine.totals.batches
        started = time.perf_counter()
        second = evaluate_retrieval(model, data, config, cache=cache)
        second_seconds = time.perf_counter() - started
        forward = model.engine.totals.batches - batches

        print_tables(first, first_seconds, second_seconds, forward)
        if args.output:
            written = write_report(second, args.output)
            print(f"\nwrote {', '.join(map(str, written))}")


def print_tables(report, first_seconds: float, second_seconds: float, forward: int) -> None:  # type: ignore[no-untyped-def]
    print(
        "\n| side | items | tokens | seconds | items/s | tokens/s |\n|---|---:|---:|---:|---:|---:|"
    )
    for side, stats in report.encoding.items():
        print(
            f"| {side} | {stats.items} | {stats.tokens} | {stats.seconds:.1f} | "
            f"{stats.items_per_second:.1f} | {stats.tokens_per_second:.0f} |"
        )
    print(
        "\n| setting | bytes/item stored | scanned | build s | ms/query p50 | p95 "
        "| ndcg@10 (random weights) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in report.results:
        print(
            f"| {r.name} | {r.stored_bytes:,.0f} | {r.scanned_bytes:,.0f} "
            f"| {r.build_seconds:.2f} | "
            f"{r.latency_ms['p50']:.2f} | {r.latency_ms['p95']:.2f} | {r.metrics['ndcg@10']:.4f} |"
        )
    print(
        f"\nfirst run (encode + score every setting): {first_seconds:.1f} s; "
        f"second run over the cache: {second_seconds:.1f} s with {forward} forward batches "
        f"-> {first_seconds / second_seconds:.2f}x"
    )


if __name__ == "__main__":
    main()
