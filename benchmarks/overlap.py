"""Preparation off the critical path: the forward's share of the wall time of ``encode``.

A mixed workload — texts of log-normal length, images given as PNG bytes (so they are decoded) and
one PDF of A4 pages (rendered) — is embedded twice by the same mid-size random v4, in one run:

* sequential: every input loaded, then every row planned, then the batches run (encode before);
* overlapped: ``Embedder.encode``, which loads and plans the next part of the inputs on one helper
  thread while the current part is in forward.

For each it prints the wall time, the seconds spent in ``forward`` (engine totals) and their share;
both must give the same embeddings (checked). A benchmark, not a test:

    python benchmarks/overlap.py                       # 160 texts, 16 images, a 20-page PDF
    python benchmarks/overlap.py --texts 40 --images 4 --pages 5 --model tiny
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import torch

import uniembed
from uniembed.bench import realistic_workload
from uniembed.inputs.items import ImageItem
from uniembed.inputs.parse import coerce_items_with_origin
from uniembed.testing import jina_v4
from uniembed.testing.pdfs import assemble_pdf


def text_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` A4 pages, each with a few lines of text (so rendering draws glyphs)."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page in range(pages):
        lines = b"".join(
            b"BT /F1 14 Tf 60 %d Td (Page %d, line %d: solar panels and storage.) Tj ET\n"
            % (780 - 24 * line, page, line)
            for line in range(30)
        )
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * page)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(lines), lines))
    return assemble_pdf(objects)


def workload(texts: int, images: int, pages: int, tasks: tuple[str, ...]) -> list:
    """Raw library inputs: texts, PNG-encoded images and one PDF, interleaved."""
    work = realistic_workload(texts, images, tasks)
    raw: list = []
    for item in work.items:
        if isinstance(item, ImageItem):
            buffer = io.BytesIO()
            item.image.save(buffer, format="PNG")
            raw.append({"image": buffer.getvalue()})
        else:
            raw.append(item.text)
    raw.insert(len(raw) // 2, {"pdf": text_pdf(pages)})
    return raw


def sequential(embedder, raw: list, task: str):
    """encode as it was: load everything, plan everything, then run."""
    parsed, _ = coerce_items_with_origin(raw)
    return embedder.run(embedder.plan(parsed, task))


def timed(embedder, function) -> tuple[float, float, list[torch.Tensor]]:
    """Wall seconds, forward seconds and the embeddings of one call."""
    forward_before = embedder.engine.totals.forward_seconds
    start = time.perf_counter()
    vectors = function().embeddings
    wall = time.perf_counter() - start
    return wall, embedder.engine.totals.forward_seconds - forward_before, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mid", "tiny"), default="mid")
    parser.add_argument("--texts", type=int, default=160)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = {"mid": jina_v4.MID, "tiny": jina_v4.TINY}[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        path = jina_v4.write_tiny_jina_v4(Path(tmp) / args.model, size=size)
        embedder = uniembed.load(path, device="cpu")
        raw = workload(args.texts, args.images, args.pages, ("retrieval.passage",))
        embedder.encode(raw[:4], "retrieval.passage")  # warm-up
        runs = {
            "sequential": timed(embedder, lambda: sequential(embedder, raw, "retrieval.passage")),
            "overlapped": timed(embedder, lambda: embedder.encode(raw, "retrieval.passage")),
        }
    drift = max(
        float((a - b).abs().max()) for a, b in zip(runs["sequential"][2], runs["overlapped"][2])
    )
    print(
        f"model={args.model} texts={args.texts} images={args.images} pdf_pages={args.pages} "
        f"items={len(runs['sequential'][2])} threads={torch.get_num_threads()} "
        f"cores={os.cpu_count()} overlapped_path={embedder._core_to_spare()}"
    )
    print(f"{'':12}{'wall s':>9}{'forward s':>11}{'forward share':>15}")
    for name, (wall, forward, _) in runs.items():
        print(f"{name:12}{wall:9.2f}{forward:11.2f}{forward / wall:15.1%}")
    print(f"max |difference| between the two: {drift:.1e}")


if __name__ == "__main__":
    main()
