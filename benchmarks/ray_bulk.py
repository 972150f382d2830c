"""Bulk throughput on Ray against the local job, measured in one run (issue #12).

    python benchmarks/ray_bulk.py                     # mid-size random v4, 768 texts + 32 images
    python benchmarks/ray_bulk.py --texts 2000 --cpus 8

The same corpus goes through three jobs, each writing Parquet: the local job (one process, torch's
default threads), Ray with 1 actor reserving every CPU, Ray with 2 actors reserving half each. The
Ray cluster is started here with ``--cpus`` logical CPUs (default: this machine's). Every job's
output is checked byte-equal to the local one. Times are wall-clock for the whole job, actor start
(model load) included; ``first chunk`` is when the first result was written. The last column is
this process's CPU time over the job's wall time: the whole work for the local job, the driver's
own share of a core for the Ray jobs.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

import uniembed
from uniembed.bulk import BulkOptions, embed_files
from uniembed.distributed import ActorPool, ModelSpec, RayEncoder
from uniembed.testing import jina_v4


@dataclass
class Row:
    name: str
    seconds: float
    first_chunk: float
    items: int
    cpu_share: float  # this process's CPU seconds / wall seconds (for Ray: the driver's own)

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def write_corpus(folder: Path, texts: int, images: int) -> Path:
    folder.mkdir(parents=True)
    words = ["solar", "wind", "panel", "roof", "grid", "battery", "storage", "inverter", "cable"]
    lines = [" ".join(words[(i + j) % len(words)] for j in range(8 + i % 24)) for i in range(texts)]
    (folder / "texts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in range(images):
        buffer = io.BytesIO()
        Image.new("RGB", (224 + 8 * i, 160), (i * 7 % 255, 90, 200)).save(buffer, format="PNG")
        (folder / f"image-{i:03d}.png").write_bytes(buffer.getvalue())
    return folder


def timed(name: str, corpus: Path, output: Path, encoder: object, options: BulkOptions) -> Row:
    first: list[float] = []
    cpu, started = time.process_time(), time.perf_counter()
    report = embed_files(
        [corpus],
        output,
        encoder,
        options,  # type: ignore[arg-type]
        on_progress=lambda *_: first or first.append(time.perf_counter() - started),
    )
    seconds = time.perf_counter() - started
    return Row(name, seconds, first[0], report.embedded, (time.process_time() - cpu) / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=768)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="records per chunk")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = jina_v4.write_tiny_jina_v4(root / "random-v4-mid", seed=0, size=jina_v4.MID)
        corpus = write_corpus(root / "corpus", args.texts, args.images)
        options = BulkOptions(task="retrieval.passage", batch_size=args.batch_size)
        load_started = time.perf_counter()
        embedder = uniembed.load(model, device="cpu")
        load_seconds = time.perf_counter() - load_started
        rows = [timed("local job", corpus, root / "local.parquet", embedder, options)]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        spec = ModelSpec(str(model), device="cpu")
        for actors in (1, 2):
            pool = ActorPool(actors=actors, cpus_per_actor=args.cpus / actors)
            output = root / f"ray-{actors}.parquet"
            rows.append(
                timed(
                    f"Ray, {actors} actor{'s' * (actors > 1)}",
                    corpus,
                    output,
                    RayEncoder(spec, pool, address="auto"),
                    options,
                )
            )
            assert pq.read_table(output).equals(pq.read_table(root / "local.parquet")), (
                "outputs differ"
            )
        ray.shutdown()

    print(
        f"{args.texts} texts + {args.images} images, chunks of {args.batch_size}, "
        f"{args.cpus} CPUs; model load in this process {load_seconds:.1f} s "
        "(not in the local job's time)"
    )
    print(
        "| job | items | seconds | first chunk s | items/s | vs local | CPU share of this process |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.items} | {row.seconds:.1f} | {row.first_chunk:.1f} | "
            f"{row.rate:.1f} | {row.rate / rows[0].rate:.2f} | {row.cpu_share:.0%} |"
        )
    print("every Ray output is byte-equal to the local one")


if __name__ == "__main__":
    main()
