"""Training speed and memory: plain vs cached (GradCache) loss, with and without activation
checkpointing, on one jina-embeddings-v4 checkpoint, in one run.

    python benchmarks/training.py                       # mid random checkpoint, CPU
    python benchmarks/training.py --model full --device cuda --batch-size 32 --mini-batch-size 8

Each configuration trains in its own process (so its peak memory is its own) through
``uniembed.training.train``: the same data, seed and steps. Reported per configuration: optimiser
steps per second (after the first step), and the peak memory above what the process held when
training began (model loaded, optimiser set up) — resident set size sampled every 2 ms on CPU, peak
allocated CUDA memory on a GPU — also per token of the batch. Ratios are against the first
configuration of ``--configs`` (the plain loss by default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONFIGS = {
    "plain": {},
    "cached": {"cached": True},
    "checkpointing": {"gradient_checkpointing": True},
    "cached+checkpointing": {"cached": True, "gradient_checkpointing": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="mid", help="mid, tiny, full (random v4 written to a temp dir) or a path"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="pairs per step (each with one hard negative)"
    )
    parser.add_argument("--mini-batch-size", type=int, default=4, help="rows per cached mini-batch")
    parser.add_argument("--passage-words", type=int, default=120)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, from {', '.join(CONFIGS)}; ratios are against the first",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = resolve_model(args.model, Path(tmp))
        data = write_data(
            Path(tmp) / "train.jsonl", args.batch_size * (args.steps + 1), args.passage_words
        )
        tokens = tokens_per_step(snapshot, data, args.batch_size)
        results = {name: run_parent(args, name, snapshot, data) for name in configs(args.configs)}
    report(args, tokens, results)


def configs(names: str) -> list[str]:
    """The configurations named in ``names``, checked against :data:`CONFIGS`."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CONFIGS]
    if unknown or not chosen:
        raise SystemExit(
            f"--configs: unknown {unknown or 'empty'}; choose from {', '.join(CONFIGS)}"
        )
    return chosen


def resolve_model(model: str, tmp: Path) -> Path:
    from uniembed.testing import jina_v4

    sizes = {"mid": jina_v4.MID, "tiny": jina_v4.TINY, "full": jina_v4.FULL}
    if model in sizes:
        return jina_v4.write_tiny_jina_v4(tmp / model, size=sizes[model])
    return Path(model)


def write_data(path: Path, count: int, passage_words: int) -> Path:
    """Domain pairs with long passages (filler words) and one hard negative each."""
    from uniembed.testing.domain import make_domain

    domain, rng = make_domain(), random.Random(0)
    topics = len(domain.query_words)

    def passage(topic: int) -> str:
        return (
            domain.passage(topic, rng) + " " + " ".join(rng.choices(domain.filler, k=passage_words))
        )

    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            topic = index % topics
            record = {
                "query": domain.query(topic, rng),
                "positive": passage(topic),
                "negatives": [passage((topic + 1) % topics)],
            }
            handle.write(json.dumps(record) + "\n")
    return path


def tokens_per_step(snapshot: Path, data: Path, batch_size: int) -> float:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    total = sum(
        len(tokenizer.encode("Query: " + r["query"]).ids)
        + sum(len(tokenizer.encode("Passage: " + p).ids) for p in [r["positive"], *r["negatives"]])
        for r in records
    )
    return total / len(records) * batch_size


def run_parent(args: argparse.Namespace, name: str, snapshot: Path, data: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--snapshot",
        str(snapshot),
        "--data",
        str(data),
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--mini-batch-size",
        str(args.mini_batch_size),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> dict:
    import torch
    from transformers import TrainerCallback

    from uniembed.training import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    options = CONFIGS[args.child]
    probe = MemoryProbe(torch.device(args.device))

    class Measure(TrainerCallback):
        def on_train_begin(self, *_, **__):
            probe.start()

        def on_step_end(self, *_, **__):
            probe.step()

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model=args.snapshot,
            data=Path(args.data),
            output=Path(out) / "run",
            task="bench",
            batch_size=args.batch_size,
            max_steps=args.steps,
            save_steps=10 * args.steps,
            logging_steps=args.steps,
            mini_batch_size=args.mini_batch_size if options.get("cached") else None,
            gradient_checkpointing=bool(options.get("gradient_checkpointing")),
            device=args.device,
            progress=False,
        )
        train(config, callbacks=[Measure()])
    return probe.result()


class MemoryProbe:
    """Peak memory above the level at the start of training, and step times."""

    def __init__(self, device) -> None:
        self.device = device
        self.baseline = 0
        self.peak = 0
        self.times: list[float] = []
        self._stop = threading.Event()

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = self.peak = _rss()
            threading.Thread(target=self._sample, daemon=True).start()
        self.times.append(time.perf_counter())

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def step(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def result(self) -> dict:
        self._stop.set()
        if self.device.type == "cuda":
            import torch

            self.peak = torch.cuda.max_memory_allocated()
        timed = self.times[2:] if len(self.times) > 2 else self.times  # the first step warms up
        steps_per_second = (len(timed) - 1) / (timed[-1] - timed[0])
        return {"steps_per_second": steps_per_second, "peak_bytes": self.peak - self.baseline}


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def report(args: argparse.Namespace, tokens: float, results: dict[str, dict]) -> None:
    first = next(iter(results))
    base = results[first]
    print(
        f"model={args.model} device={args.device} steps={args.steps} batch={args.batch_size} pairs "
        f"(+1 hard negative) mini_batch={args.mini_batch_size} rows tokens/step={tokens:.0f} "
        f"threads={args.threads or 'default'}"
    )
    print(
        f"{'':24}{'steps/s':>9}{'vs ' + first:>10}{'peak MiB':>10}{'vs ' + first:>10}"
        f"{'KiB/token':>11}"
    )
    for name, result in results.items():
        mib = result["peak_bytes"] / 2**20
        print(
            f"{name:24}{result['steps_per_second']:9.3f}"
            f"{result['steps_per_second'] / base['steps_per_second']:9.2f}x"
            f"{mib:10.0f}{result['peak_bytes'] / max(1, base['peak_bytes']):9.2f}x"
            f"{result['peak_bytes'] / tokens / 1024:11.1f}"
        )


if __name__ == "__main__":
    main()
