"""How much batching changes a vector: every item embedded alone vs in batches with other items
(other lengths, so other padding; other tasks; images beside texts). The difference is float
rounding: a padded batch runs the same maths through differently shaped matrix products, whose
summation order (and so last bits) differ. Prints the largest absolute difference over all vector
components.

    python benchmarks/batching_rounding.py  # the tiny v4 checkpoint (written to a temp dir)
    python benchmarks/batching_rounding.py --model DIR --items 64
"""

from __future__ import annotations

import argparse
import random
import tempfile

import numpy as np
import torch
from PIL import Image

import uniembed
from uniembed.engine.planning import BatchPolicy
from uniembed.inputs.items import ImageItem, TextItem

WORDS = [
    "sun",
    "panel",
    "energy",
    "light",
    "cell",
    "code",
    "def",
    "return",
    "matrix",
    "太陽",
    "énergie",
    "the",
    "of",
    "a",
    "and",
]
TASKS = ["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"]


def items_and_tasks(count: int, seed: int = 0) -> tuple[list, list[str]]:
    rng = random.Random(seed)
    items: list = []
    for index in range(count):
        if index % 5 == 4:
            pixels = np.random.default_rng(index).integers(0, 255, (8, 8, 3), dtype=np.uint8)
            items.append(
                ImageItem(
                    Image.fromarray(pixels).resize((rng.randint(56, 300), rng.randint(56, 300)))
                )
            )
        else:
            items.append(TextItem(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200)))))
    return items, [rng.choice(TASKS) for _ in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="snapshot directory (default: a tiny random v4)")
    parser.add_argument("--items", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    path = args.model
    if path is None:
        from uniembed.testing.jina_v4 import write_tiny_jina_v4

        path = write_tiny_jina_v4(tempfile.mkdtemp() + "/tiny-v4")
    model = uniembed.load(path, device="cpu", dtype="float32")
    items, tasks = items_and_tasks(args.items)
    alone = [
        model.run(model.plan([item], [task])).embeddings[0] for item, task in zip(items, tasks)
    ]
    worst = {}
    for budget in (512, 4096, 32768):
        batched = model.run(
            model.plan(items, tasks), policy=BatchPolicy(token_budget=budget, max_batch_size=64)
        )
        worst[budget] = max(float((a - b).abs().max()) for a, b in zip(alone, batched.embeddings))
    for budget, difference in worst.items():
        print(f"token budget {budget:>6}: largest |batched - alone| = {difference:.2e}")
    print(f"overall: {max(worst.values()):.2e} over {len(items)} items (float32, CPU)")


if __name__ == "__main__":
    main()
