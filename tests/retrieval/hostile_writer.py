"""Hostile ids and metadata from a seeded generator, and a writer process that adds them to an index
until it is killed: ``python -m tests.retrieval.hostile_writer INDEX SEED``.

The writer prints one JSON line per add: ``{"ok": id, "metadata": …}`` for a stored document,
``{"refused": error type}`` for one the index refused; any other exception ends it (a traceback on
stderr).
"""

from __future__ import annotations

import json
import math
import random
import sys
from typing import Any

STRINGS = [
    "",
    "plain",
    "a.b",
    "[0]",
    "metadata.x",
    "é中🙂",
    "\u200b",
    "\x00",
    "line\nbreak",
    "\x7f\x85",
    "lone \ud800 surrogate",
    "\udfff",
    '"quoted"\\',
    "%0A/..",
]
NUMBERS = [0, -1, 2**31, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**70), 0.5, -0.0, 1e308]
NUMBERS += [math.nan, math.inf, -math.inf]


def hostile_string(rng: random.Random) -> str:
    """A short awkward string, now and then a long one."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice("ab\n\x00\ud800") * rng.choice([1_100, 70_000])
    if roll < 0.5:
        return rng.choice(STRINGS)
    return "".join(
        chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)])) for _ in "xyz"
    )


def nested(rng: random.Random, depth: int) -> Any:
    """An object or list ``depth`` levels deep."""
    value: Any = rng.choice([{}, [], 1, "leaf"])
    for _ in range(depth - 1):
        value = {hostile_string(rng)[:8]: value} if rng.random() < 0.5 else [value]
    return value


def hostile_value(rng: random.Random, budget: int = 3) -> Any:
    """A JSON-ish value: scalars that the store cannot keep, deep or wide structures, non-JSON
    Python values."""
    roll = rng.random()
    if roll < 0.25:
        return hostile_string(rng)
    if roll < 0.45:
        return rng.choice(NUMBERS)
    if roll < 0.5:
        return rng.choice([True, False, None])
    if roll < 0.55:
        return nested(rng, rng.choice([5, 31, 33, 64, 123, 124, 126, 130, 400]))
    if roll < 0.58:
        return {f"k{i}": i for i in range(rng.choice([10, 1_030, 2_000]))}
    if roll < 0.6:
        return rng.choice([{1, 2}, b"bytes", (1, 2), object()])
    if budget <= 0:
        return rng.random()
    if roll < 0.8:
        return [hostile_value(rng, budget - 1) for _ in range(rng.randrange(4))]
    return {
        hostile_string(rng)[:20]: hostile_value(rng, budget - 1) for _ in range(rng.randrange(4))
    }


def hostile_id(rng: random.Random, number: int) -> Any:
    """An id: mostly usable ones (some repeated, so adds replace), some the index must refuse."""
    roll = rng.random()
    if roll < 0.4:
        return f"doc-{number % 300}"
    if roll < 0.8:
        return f"{hostile_string(rng)[:2000]}-{number}"
    return rng.choice(["", "x" * 1_025, "tab\tbed", "a\ud800", 7, None, "é" * 1_024])


def hostile_metadata(rng: random.Random) -> Any:
    """Metadata: now and then no object at all; often a ``flag`` for the bool filters."""
    if rng.random() < 0.03:
        return rng.choice([[1], "text", 3])
    metadata = {hostile_string(rng)[:30]: hostile_value(rng) for _ in range(rng.randrange(5))}
    if rng.random() < 0.5:
        metadata["flag"] = rng.choice([True, False, 1, "true"])
    return metadata


def main(location: str, seed: int) -> None:
    from uniembed.embedder import Embedder
    from uniembed.errors import UniembedError
    from uniembed.retrieval.index import open_index
    from uniembed.testing.fake import FakeModel

    rng = random.Random(seed)
    index = open_index(location, Embedder(FakeModel()), metadata_fields={"flag": "bool"})
    number = 0
    while True:  # until killed
        doc_id, metadata = hostile_id(rng, number), hostile_metadata(rng)
        text = "a \ud800 text" if rng.random() < 0.02 else f"text number {number}"
        try:
            index.add([text], [doc_id], [metadata])
        except UniembedError as error:
            print(json.dumps({"refused": type(error).__name__}), flush=True)
        else:
            print(json.dumps({"ok": doc_id, "metadata": metadata}), flush=True)
        number += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))  # any other exception ends the output: the test fails
