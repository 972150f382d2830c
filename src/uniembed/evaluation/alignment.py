"""Cross-modal alignment and the modality gap, on image–caption pairs.

* ``matching_cosine`` — the mean cosine similarity of matching image–text pairs: the alignment
  score of the jina-embeddings-v4 report (§8.2; v4 0.71 on Flickr30K, OpenAI CLIP 0.15);
* ``random_cosine`` — the same over every non-matching pair (image i with caption j ≠ i);
* ``modality_gap`` — the Euclidean distance between the centroids of the L2-normalised image and
  text embeddings (Liang et al., 2022, "Mind the Gap").

Pairs are read from a JSONL file (``{"image": path, "text": caption}`` per line, paths relative to
the file) or a ``datasets`` folder / Parquet file with ``image`` and ``text`` (or ``caption``)
columns.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from uniembed.core.vectors import finalize_vectors
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.data import EvalItem
from uniembed.evaluation.encode import IMAGE_CHUNK, Progress


@dataclass(frozen=True)
class AlignmentResult:
    pairs: int
    matching_cosine: float
    random_cosine: float
    modality_gap: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alignment_scores(images: torch.Tensor, texts: torch.Tensor) -> AlignmentResult:
    """The three numbers for L2-normalised ``images`` and ``texts`` (pairs, dim); rows i match.

    >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> alignment_scores(images, images)
    AlignmentResult(pairs=2, matching_cosine=1.0, random_cosine=0.0, modality_gap=0.0)
    """
    count = images.shape[0]
    if count < 2 or texts.shape != images.shape:
        raise InvalidInput(
            f"alignment needs at least 2 image-text pairs of equal shape, got "
            f"{tuple(images.shape)} and {tuple(texts.shape)}"
        )
    similarities = images.double() @ texts.double().T  # (pairs, pairs): image i with text j
    matching = similarities.diagonal().sum()
    gap = torch.linalg.vector_norm(images.double().mean(0) - texts.double().mean(0))
    return AlignmentResult(
        pairs=count,
        matching_cosine=float(matching / count),
        random_cosine=float((similarities.sum() - matching) / (count * (count - 1))),
        modality_gap=float(gap),
    )


def evaluate_alignment(
    embedder: Embedder,
    pairs: Sequence[tuple[EvalItem, str]],
    *,
    image_task: str = "retrieval.passage",
    text_task: str = "retrieval.query",
    dimensions: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> AlignmentResult:
    """Embed the images and captions of ``pairs`` (``sample`` of them at random, if given) and
    score their alignment. Images take ``image_task``'s adapter, captions ``text_task``'s."""
    chosen = list(pairs)
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    images = _single_vectors(embedder, [image for image, _ in chosen], image_task, on_progress)
    texts = _single_vectors(embedder, [text for _, text in chosen], text_task, on_progress)
    return alignment_scores(
        finalize_vectors(images, dimensions), finalize_vectors(texts, dimensions)
    )


def _single_vectors(
    embedder: Embedder, items: list[Any], task: str, on_progress: Progress | None
) -> torch.Tensor:
    from uniembed.evaluation.data import encode_input

    vectors = []
    for start in range(0, len(items), IMAGE_CHUNK):
        chunk = [encode_input(item) for item in items[start : start + IMAGE_CHUNK]]
        vectors += embedder.encode(chunk, task).embeddings
        if on_progress:
            on_progress(len(chunk))
    return torch.stack(vectors).float()


def read_pairs(path: Path) -> list[tuple[EvalItem, str]]:
    """Image–caption pairs from a JSONL file or a ``datasets`` folder / Parquet file."""
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return _jsonl_pairs(path)
    if path.exists():
        return _table_pairs(path)
    raise InvalidInput(f"{path}: no such file or folder")


def _jsonl_pairs(path: Path) -> list[tuple[EvalItem, str]]:
    from uniembed.core.files import read_jsonl

    pairs: list[tuple[EvalItem, str]] = []
    for where, record in read_jsonl(path):
        caption = record.get("text", record.get("caption"))
        image = record.get("image")
        if not isinstance(caption, str) or not isinstance(image, str):
            raise InvalidInput(
                f"{where}: expected 'image' (a path) and 'text' (the caption) strings"
            )
        file = path.parent / image
        if not file.is_file():
            raise InvalidInput(f"{where}: image file {file} does not exist")
        pairs.append(({"image": str(file)}, caption))
    if not pairs:
        raise InvalidInput(f"{path}: no pairs")
    return pairs


def _table_pairs(path: Path) -> list[tuple[EvalItem, str]]:
    from uniembed.evaluation.readers import ImageColumn, load_table

    table = load_table(path)
    caption = next((c for c in ("text", "caption") if c in table.column_names), None)
    if "image" not in table.column_names or caption is None:
        raise InvalidInput(
            f"{path}: expected columns 'image' and 'text' (or 'caption'), "
            f"got {', '.join(table.column_names)}"
        )
    images = ImageColumn(table, "image")
    captions = table[caption]
    if len(captions) == 0:
        raise InvalidInput(f"{path}: no pairs")
    return [(images[i], str(captions[i])) for i in range(len(captions))]
