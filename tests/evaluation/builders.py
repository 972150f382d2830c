"""Small retrieval datasets written by the tests, in every format the readers take.

A plain module (not conftest) so tests can import it. Texts are distinct sentences none of which is
a prefix of another (so under a causal model no other text can tie with a text's own vectors).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

WORDS = [
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "iris",
    "juniper",
    "kelp",
    "lagoon",
    "meadow",
    "nectar",
    "orchid",
    "pebble",
    "quartz",
    "raven",
    "saffron",
    "tundra",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct four-word sentences."""
    rng = random.Random(seed)
    made: dict[str, None] = {}
    while len(made) < count:
        made[" ".join(rng.sample(WORDS, 4)) + f" number {len(made)}."] = None
    return list(made)


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_beir(
    folder: Path,
    docs: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    split: str = "test",
    titles: dict[str, str] | None = None,
) -> Path:
    titles = titles or {}
    write_jsonl(
        folder / "corpus.jsonl",
        [{"_id": i, "title": titles.get(i, ""), "text": t} for i, t in docs.items()],
    )
    write_jsonl(folder / "queries.jsonl", [{"_id": i, "text": t} for i, t in queries.items()])
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{s}" for q, docs_ in qrels.items() for d, s in docs_.items()
    ]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def identity_dataset(
    count: int, seed: int = 0
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Every query is the text of its one relevant document."""
    texts = sentences(count, seed)
    docs = {f"d{i}": text for i, text in enumerate(texts)}
    queries = {f"q{i}": text for i, text in enumerate(texts)}
    return docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(count)}


def color_image(index: int, size: int = 64) -> Image.Image:
    rng = random.Random(index)
    return Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))


def write_pairs(folder: Path, count: int) -> Path:
    """``count`` images with a caption each, as a pairs JSONL file beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, caption in enumerate(sentences(count, seed=11)):
        color_image(i).save(folder / f"{i}.png")
        records.append({"image": f"{i}.png", "text": caption})
    return write_jsonl(folder / "pairs.jsonl", records)


def pdf_file(path: Path, pages: int, size: tuple[int, int] = (64, 64)) -> Path:
    """A PDF whose pages are plain colours (PIL writes it; at 72 dpi a page is ``size`` points)."""
    images = [color_image(100 + i, size[0]) for i in range(pages)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=72.0)
    return path


def vidore_tables(images: int = 6) -> dict[str, Any]:
    """The three ViDoRe configs as ``datasets.Dataset`` objects: image corpus, text queries."""
    import datasets

    corpus = datasets.Dataset.from_dict(
        {"corpus-id": list(range(images)), "image": [color_image(i) for i in range(images)]},
        features=datasets.Features(
            {"corpus-id": datasets.Value("int64"), "image": datasets.Image()}
        ),
    )
    queries = datasets.Dataset.from_dict(
        {"query-id": list(range(images)), "query": sentences(images, seed=7)}
    )
    qrels = datasets.Dataset.from_dict(
        {"query-id": list(range(images)), "corpus-id": list(range(images)), "score": [1] * images}
    )
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def write_vidore(folder: Path, how: str, images: int = 6) -> Path:
    """``how``: ``save_to_disk`` (a DatasetDict with a ``test`` split per config), ``parquet``
    (``<config>.parquet``) or ``hub-parquet`` (``<config>/test-00000-of-00001.parquet``)."""
    import datasets

    for name, table in vidore_tables(images).items():
        if how == "save_to_disk":
            datasets.DatasetDict({"test": table}).save_to_disk(str(folder / name))
        elif how == "parquet":
            table.to_parquet(str(folder / f"{name}.parquet"))
        else:
            (folder / name).mkdir(parents=True, exist_ok=True)
            table.to_parquet(str(folder / name / "test-00000-of-00001.parquet"))
    return folder
