"""Loading a full-size checkpoint on this machine: peak memory against the weights it holds.

    python benchmarks/full_load.py --model full      # v4: 3.8B parameters, ~7.6 GB of bf16 shards
    python benchmarks/full_load.py --model v3-full   # v3's shapes (its vocabulary: the tiny one's)
    python benchmarks/full_load.py --model mid --dtype float32 --dtype bfloat16   # seconds
    python benchmarks/full_load.py --model full --dtype int8 --dtype float32 --encode 12

A random snapshot in the official layout (bf16 shards, as published) is written to ``--dir`` (kept
there, reused by later runs), then each ``--dtype`` is loaded in a fresh process, which reports its
resident memory before loading (interpreter, torch, transformers), its peak while loading
(``VmHWM``), and the bytes of the tensors the loaded model holds. Issue #19's bars: peak ≤ 1.15× the
float32 weights (no second full copy while converting); with ``int8``, peak below the bf16 shards.
With ``--encode N`` each process then embeds N texts of ``uniembed bench``'s mix (a random task
each): tokens/s, its ratio to the first dtype's, and the peak with activations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import json, sys, time
from pathlib import Path

def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))

import torch, transformers  # noqa: F401  (what any load pays first)
from uniembed.models.registry import load_model

before = kib("VmRSS") * 1024
started = time.perf_counter()
model = load_model(Path(sys.argv[1]), device="cpu", dtype=sys.argv[2])
seconds = time.perf_counter() - started
peak = kib("VmHWM") * 1024
modules = [m for m in vars(model).values() if isinstance(m, torch.nn.Module)]
seen, held = set(), 0
for module in modules:
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            held += tensor.numel() * tensor.element_size()
    # int8 layers hold their weight packed for oneDNN, outside parameters() and buffers()
    held += sum(m.packed_bytes() for m in module.modules() if hasattr(m, "packed_bytes"))
result = {"before": before, "peak": peak, "weights": held, "seconds": seconds}
texts = int(sys.argv[3])
if texts:  # then embed: tokens/s and the peak with activations
    from uniembed.bench import realistic_workload
    from uniembed.embedder import Embedder
    from uniembed.engine.planning import BatchPolicy

    embedder = Embedder(model, BatchPolicy(int(sys.argv[4]), 64, True))
    work = realistic_workload(texts, 0, model.info.tasks, 0)
    embedder.encode(work.items[:2], task=work.tasks[:2])  # warm-up
    started = time.perf_counter()
    done = embedder.encode(work.items, task=work.tasks)
    result["encode_seconds"] = time.perf_counter() - started
    result["tokens"] = sum(done.token_counts)
    result["encode_peak"] = kib("VmHWM") * 1024
print(json.dumps(result))
"""

SIZES = ("full", "mid", "tiny", "v3-full", "v3-mid", "v3-tiny")


def write_snapshot(name: str, folder: Path) -> Path:
    """The random snapshot ``name`` under ``folder`` (written once)."""
    path = folder / name
    if (path / "config.json").exists():
        return path
    from uniembed.testing.snapshots import write_random_snapshot

    written = write_random_snapshot(name, folder)
    assert written is not None, name
    return written


def measure(snapshot: Path, dtype: str, texts: int = 0, budget: int = 4096) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(snapshot), dtype, str(texts), str(budget)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    on_disk = sum(f.stat().st_size for f in snapshot.rglob("*.safetensors"))
    row = {**result, "dtype": dtype, "on_disk": on_disk}
    print(json.dumps(row), file=sys.stderr, flush=True)  # each as it comes: long runs
    return row


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="full", choices=SIZES)
    parser.add_argument("--dtype", action="append", help="float32 (default), bfloat16, int8 …")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "uniembed-full")
    parser.add_argument(
        "--encode", type=int, default=0, help="then embed this many texts: tokens/s, peak"
    )
    parser.add_argument("--token-budget", type=int, default=4096, help="tokens per batch")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    snapshot = write_snapshot(args.model, args.dir)
    print(f"snapshot {snapshot} ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows = [
        measure(snapshot, dtype, args.encode, args.token_budget)
        for dtype in args.dtype or ["float32"]
    ]
    gib = 2**30
    print(
        "| model | dtype | shards on disk GiB | weights held GiB | RSS before GiB | peak RSS GiB "
        "| peak / weights | (peak − before) / weights | load s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {args.model} | {row['dtype']} | {row['on_disk'] / gib:.2f} | "
            f"{row['weights'] / gib:.2f} | {row['before'] / gib:.2f} | {row['peak'] / gib:.2f} | "
            f"{row['peak'] / row['weights']:.3f} | "
            f"{(row['peak'] - row['before']) / row['weights']:.3f} | {row['seconds']:.0f} |"
        )
    if args.encode:
        print(f"\n{args.encode} texts, a random task each, token budget {args.token_budget}:")
        base = next((r for r in rows if r["dtype"] == "float32"), rows[0])
        print(f"| model | dtype | tokens | seconds | tokens/s | × {base['dtype']} | peak RSS GiB |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {args.model} | {row['dtype']} | {row['tokens']} | "
                f"{row['encode_seconds']:.1f} | {row['tokens'] / row['encode_seconds']:.1f} | "
                f"{base['encode_seconds'] / row['encode_seconds']:.2f}× | "
                f"{row['encode_peak'] / gib:.2f} |"
            )
    return rows


if __name__ == "__main__":
    main()
