"""The Ray bulk driver's own memory and CPU (issue #18): peak RSS for 10k and 1M short texts, and
the share of a core the driver uses while its actors work.

    python benchmarks/ray_bulk_driver.py                        # 10k and 1M texts, fake encoder
    python benchmarks/ray_bulk_driver.py --texts 10000 --encoder tiny

Every job runs in a fresh process (its own one-node Ray cluster, 2 actors of 1 CPU) so that its
peak RSS (``ru_maxrss``) is that driver's alone; Ray's own processes and the actors are not counted.
``--encoder fake`` gives the actors a toy model (uniembed.testing.FakeModel: a table lookup, ~4k
texts/s per actor here) so that a million texts run in minutes on 2 cores; ``tiny`` is a random
tiny jina-v4 checkpoint (a real forward). CPU share = the driver's CPU seconds (all its threads,
Ray's included) / the job's wall seconds, actor start included. The output is Parquet.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from uniembed.bulk import BulkOptions, embed_files
from uniembed.distributed import ActorPool, ModelSpec, RayEncoder, connect


@dataclass(frozen=True)
class FakeSpec(ModelSpec):
    """Actors load the toy model instead of a checkpoint."""

    def load(self):  # type: ignore[no-untyped-def]
        from uniembed.embedder import Embedder
        from uniembed.testing.fake import FakeModel

        return Embedder(FakeModel())


def write_texts(path: Path, count: int) -> Path:
    words = ["solar", "wind", "panel", "roof", "grid", "battery", "storage", "inverter"]
    with path.open("w", encoding="utf-8") as file:
        for i in range(count):
            file.write(f"{words[i % 8]} {words[(i // 8) % 8]} text number {i}\n")
    return path


def run_job(texts: int, encoder: str, batch_size: int) -> dict[str, float]:
    """One job in this process; what the parent prints."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = write_texts(root / "texts.txt", texts)
        if encoder == "fake":
            spec = FakeSpec("fake-model", device="cpu")
        else:
            from uniembed.testing.jina_v4 import write_tiny_jina_v4

            spec = ModelSpec(str(write_tiny_jina_v4(root / "tiny-v4", seed=0)), device="cpu")
        connect("local")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu, wall = time.process_time(), time.perf_counter()
        report = embed_files(
            [corpus],
            root / "out.parquet",
            RayEncoder(spec, ActorPool(actors=2), address="auto"),
            BulkOptions(task="retrieval.passage", batch_size=batch_size),
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert report.finished and report.embedded == texts, report
    return {
        "rss_before_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": wall,
        "cpu_share": cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--encoder", choices=["fake", "tiny"], default="fake")
    parser.add_argument("--batch-size", type=int, default=256, help="records per chunk")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_job(args.texts[0], args.encoder, args.batch_size)))
        return
    rows = []
    for texts in args.texts:
        command = [sys.executable, __file__, "--child", "--texts", str(texts)]
        command += ["--encoder", args.encoder, "--batch-size", str(args.batch_size)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append((texts, json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"encoder {args.encoder}, chunks of {args.batch_size}, 2 actors of 1 CPU")
    print("| texts | driver RSS before job MB | driver peak RSS MB | seconds | driver CPU share |")
    print("|---:|---:|---:|---:|---:|")
    for texts, row in rows:
        print(
            f"| {texts:,} | {row['rss_before_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
            f"{row['seconds']:.1f} | {row['cpu_share']:.0%} |"
        )


if __name__ == "__main__":
    main()
