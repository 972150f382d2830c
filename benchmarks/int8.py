"""int8 linears against float32 on the CPU, in one run: speed, embedding agreement, ranking
agreement, and (v3) ONNX Runtime on the same checkpoint (issue #19, point 2).

    python benchmarks/int8.py                                 # mid v4: 160 texts, 6 images
    python benchmarks/int8.py --model v3-mid                  # + ONNX Runtime fp32 and int8
    python benchmarks/int8.py --model full --texts 48 --images 0 --repeat 1 --no-eval

One process loads the random snapshot (official layout, written once under ``--dir``) twice,
``dtype="float32"`` and ``dtype="int8"``, and embeds the same workload with each, alternating
rounds (best kept): the realistic mix of ``uniembed bench`` (log-normal text lengths, random task
per item, v4 also images; single vectors and, for v4, multi-vectors from the same pass). For v3
every item is a ``retrieval.passage`` text, and the same checkpoint is exported from uniembed's
float32 model (the passage adapter merged) with ``torch.onnx.export`` and run by ONNX Runtime in
float32 and after ``onnxruntime.quantization.quantize_dynamic`` (int8), on the same token ids in
padded batches, longest first, of at most 32 rows (the official ``encode``'s batch size) and 8,192
padded tokens (ORT's attention materialises its scores; ORT cannot pack rows).

Printed: seconds and real tokens/s of each runner, its ratio to uniembed float32, the cosine of
its single vectors (and v4's per-token multi-vectors) to uniembed float32's, and the bytes of
weights it holds. With eval (the default), ``uniembed eval retrieval`` runs on a fixed corpus
(texts of the workload's kind, each query a few words of its document) with both dtypes: nDCG@10
of each and the overlap of their top 10s — ranking agreement (v4 only: ``uniembed eval`` encodes
multi-vectors, which v3 has not).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import uniembed
from uniembed.bench import realistic_workload
from uniembed.models.quantized import Int8Linear

SIZES = ("mid", "tiny", "full", "v3-mid", "v3-tiny", "v3-full")
V3_TASK = "retrieval.passage"
ORT_BATCH = 32  # the official v3 encode()'s batch size
ORT_TOKENS = 8192  # padded tokens per ORT batch: its attention holds (rows, heads, seq, seq)


def write_snapshot(name: str, folder: Path) -> Path:
    """The random snapshot ``name`` under ``folder`` (written once, reused)."""
    path = folder / name
    if (path / "config.json").exists():
        return path
    from uniembed.testing.snapshots import write_random_snapshot

    written = write_random_snapshot(name, folder)
    assert written is not None, name
    return written


def weights_bytes(embedder: Any) -> int:
    """Bytes of every tensor the model holds, int8 weights packed for oneDNN included."""
    seen, held = set(), 0
    for module in embedder._modules():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                held += tensor.numel() * tensor.element_size()
        held += sum(m.packed_bytes() for m in module.modules() if isinstance(m, Int8Linear))
    return held


Outputs = tuple[torch.Tensor, list[torch.Tensor] | None]  # single vectors, multi-vectors


def uniembed_runner(embedder: Any, items: list, tasks: list[str], output: str) -> Callable:
    def run() -> Outputs:
        result = embedder.encode(items, task=tasks, output=output)
        multi = list(result.multivectors) if output == "both" else None
        return torch.stack([torch.as_tensor(v) for v in result.embeddings]), multi

    return run


def onnx_runners(
    embedder: Any, items: list, folder: Path, threads: int
) -> dict[str, tuple[Callable, int]]:
    """ONNX Runtime float32 and int8 runners of the v3 model's ``retrieval.passage`` path, with
    the size of each model file."""
    from uniembed._optional import require
    from uniembed.models.lora import merged_copy

    what = "the ONNX Runtime comparison (--no-onnx skips it)"
    ort = require("onnxruntime", "onnx", what)
    quantization = require("onnxruntime.quantization", "onnx", what)
    require("onnxscript", "onnx", what)  # torch.onnx.export's translator

    model = embedder._model
    rows = embedder.plan(items, V3_TASK).rows
    backbone = merged_copy(model.backbone, rows[0].adapter)  # the passage adapter, merged
    backbone.config._attn_implementation = "sdpa"  # padded batches: a mask, no packing
    fp32_path, int8_path = folder / "v3-fp32.onnx", folder / "v3-int8.onnx"
    ids, mask = padded([row.input_ids for row in rows[:4]], model.config.pad_token_id)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(
        MeanPooled(backbone).eval(),
        (ids, mask),
        str(fp32_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["pooled"],
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        dynamo=True,
        external_data=False,
    )
    quantization.quantize_dynamic(
        str(fp32_path), str(int8_path), weight_type=quantization.QuantType.QInt8
    )
    order = sorted(range(len(rows)), key=lambda i: -rows[i].num_tokens)  # longest first
    batches = ort_batches([rows[i].num_tokens for i in order], order)
    feeds = []
    for chunk in batches:
        ids, mask = padded([rows[i].input_ids for i in chunk], model.config.pad_token_id)
        feeds.append((chunk, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # its arena keeps the largest batch of every shape
    runners = {}
    for label, path in (("onnxruntime float32", fp32_path), ("onnxruntime int8", int8_path)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(session: Any = session) -> Outputs:
            out = torch.empty(len(rows), model.info.dim)
            for chunk, feed in feeds:
                out[chunk] = torch.from_numpy(session.run(None, feed)[0])
            return out, None

        runners[label] = (run, path.stat().st_size)
    return runners


def ort_batches(lengths: list[int], order: list[int]) -> list[list[int]]:
    """``order`` (longest first; ``lengths`` in that order) cut into batches of at most
    ``ORT_BATCH`` rows and ``ORT_TOKENS`` padded tokens (a longer row alone): ORT's attention
    materialises its scores, so 32 rows padded to ~1,800 tokens took 10 GB on the tiny v3."""
    batches: list[list[int]] = []
    longest = 0  # of the last batch: its first row
    for index, length in zip(order, lengths, strict=True):
        last = batches[-1] if batches else []
        if last and len(last) < ORT_BATCH and (len(last) + 1) * longest <= ORT_TOKENS:
            last.append(index)
        else:
            batches.append([index])
            longest = length
    return batches


class MeanPooled(torch.nn.Module):
    """The backbone's last hidden states mean-pooled over the mask and normalised (v3's single
    vector for a plain text: one span, every token)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        weights = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)  # (b, s, 1)
        pooled = (hidden.last_hidden_state * weights).sum(1) / weights.sum(1)  # (b, dim)
        return torch.nn.functional.normalize(pooled, dim=-1)


def padded(sequences: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    return ids, mask


def cosines(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Min and mean cosine of matching rows."""
    values = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
    return float(values.min()), float(values.mean())


def token_cosines(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    values = torch.cat(
        [
            torch.nn.functional.cosine_similarity(torch.as_tensor(x), torch.as_tensor(y), dim=-1)
            for x, y in zip(a, b)
        ]
    )
    return float(values.min()), float(values.mean())


def ranking_agreement(
    snapshot: Path, multivector: bool, folder: Path, docs: int, seed: int
) -> list[dict[str, Any]]:
    """``uniembed eval retrieval`` with float32 and int8 on a fixed corpus: each setting's
    nDCG@10 and the mean overlap of the two dtypes' top 10s."""
    from typer.testing import CliRunner

    from uniembed.cli import app

    rng = random.Random(seed)
    texts = [item.text for item in realistic_workload(docs, 0, ["x"], seed).items]
    data = folder / "corpus"
    (data / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(texts)]
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for i, text in enumerate(texts[: docs // 4]):
        words = text.split()
        start = rng.randrange(max(1, len(words) - 6))
        queries.append({"_id": f"q{i}", "text": " ".join(words[start : start + 6])})
        qrels.append(f"q{i}\td{i}\t1")
    (data / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (data / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (data / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    settings = ["-s", "dense", *(["-s", "maxsim"] if multivector else [])]
    reports = {}
    for dtype in ("float32", "int8"):
        out = folder / f"eval-{dtype}"
        args = ["eval", "retrieval", str(data), "-m", str(snapshot), "--dtype", dtype]
        args += [*settings, "--k", "10", "--runs", "--no-cache", "--no-progress", "-o", str(out)]
        result = CliRunner().invoke(app, args)
        if result.exit_code != 0:
            raise RuntimeError(f"uniembed eval failed: {result.output}")
        reports[dtype] = (json.loads((out / "report.json").read_text()), out / "runs")
    rows = []
    for setting in reports["float32"][0]["settings"]:
        name = setting["name"]
        tops = [_top10(runs / f"{_safe(name)}.trec") for _, runs in reports.values()]
        overlap = [len(set(tops[0][q]) & set(tops[1].get(q, []))) / 10 for q in tops[0]]
        int8_setting = next(s for s in reports["int8"][0]["settings"] if s["name"] == name)
        rows.append(
            {
                "setting": name,
                "ndcg@10 float32": setting["metrics"]["ndcg@10"],
                "ndcg@10 int8": int8_setting["metrics"]["ndcg@10"],
                "top-10 overlap": sum(overlap) / len(overlap),
            }
        )
    return rows


def _safe(name: str) -> str:
    from uniembed.evaluation.report import safe_name

    return safe_name(name)


def _top10(path: Path) -> dict[str, list[str]]:
    tops: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        query, _, doc, rank, *_ = line.split()
        if int(rank) <= 10:
            tops.setdefault(query, []).append(doc)
    return tops


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mid", choices=SIZES)
    parser.add_argument("--texts", type=int, default=160)
    parser.add_argument("--images", type=int, default=6, help="v4 only")
    parser.add_argument("--repeat", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: default)")
    parser.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--eval-docs", type=int, default=200)
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "uniembed-full")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    snapshot = write_snapshot(args.model, args.dir)
    float32 = uniembed.load(snapshot, device="cpu", dtype="float32")
    int8 = uniembed.load(snapshot, device="cpu", dtype="int8")
    info = float32.info
    v3 = info.multivector_dim is None
    workload = realistic_workload(
        args.texts, 0 if v3 else args.images, info.tasks, args.seed
    )  # v4: a random task per item
    tasks = [V3_TASK] * len(workload.items) if v3 else workload.tasks
    output = "single" if v3 else "both"
    tokens = sum(float32.plan(workload.items, tasks).token_counts)
    runners: dict[str, tuple[Callable, int]] = {
        "uniembed float32": (
            uniembed_runner(float32, workload.items, tasks, output),
            weights_bytes(float32),
        ),
        "uniembed int8": (
            uniembed_runner(int8, workload.items, tasks, output),
            weights_bytes(int8),
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if v3 and args.onnx:
            runners.update(
                onnx_runners(float32, workload.items, Path(tmp), torch.get_num_threads())
            )
        for run, _ in runners.values():  # warm-up
            run()
        best: dict[str, float] = {}
        outputs: dict[str, Outputs] = {}
        for _ in range(args.repeat):
            for label, (run, _) in runners.items():
                started = time.perf_counter()
                outputs[label] = run()
                seconds = time.perf_counter() - started
                best[label] = min(best.get(label, seconds), seconds)
        agreement = (
            ranking_agreement(snapshot, not v3, Path(tmp), args.eval_docs, args.seed)
            if args.eval and not v3  # uniembed eval encodes multi-vectors too: v4 only
            else []
        )
    reference = outputs["uniembed float32"]
    print(
        f"model={args.model} family={info.family} items={len(workload.items)} "
        f"real_tokens={tokens} threads={torch.get_num_threads()} repeat={args.repeat}"
    )
    print(
        "| runner | seconds | tokens/s | × uniembed float32 | single-vector cosine min / mean "
        "| per-token cosine min / mean | weights MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for label, (_, size) in runners.items():
        single, multi = outputs[label]
        row = {
            "seconds": best[label],
            "tokens_per_s": tokens / best[label],
            "speedup": best["uniembed float32"] / best[label],
            "cosine": cosines(single, reference[0]),
            "token_cosine": token_cosines(multi, reference[1]) if multi and reference[1] else None,
            "weights": size,
        }
        rows[label] = row
        token = (
            "–" if row["token_cosine"] is None else "{:.4f} / {:.4f}".format(*row["token_cosine"])
        )
        print(
            f"| {label} | {row['seconds']:.2f} | {row['tokens_per_s']:.0f} | "
            f"{row['speedup']:.2f}× | {row['cosine'][0]:.4f} / {row['cosine'][1]:.4f} | {token} | "
            f"{size / 2**20:.1f} |"
        )
    if agreement:
        print("\n| uniembed eval setting | nDCG@10 float32 | nDCG@10 int8 | top-10 overlap |")
        print("|---|---|---|---|")
        for row in agreement:
            print(
                f"| {row['setting']} | {row['ndcg@10 float32']:.4f} | {row['ndcg@10 int8']:.4f} | "
                f"{row['top-10 overlap']:.3f} |"
            )
    sys.stdout.flush()
    return {"tokens": tokens, "rows": rows, "agreement": agreement}


if __name__ == "__main__":
    main()
