"""Cross-modal alignment: the three numbers against a direct computation, the pairs readers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.evaluation.builders import color_image, sentences, write_jsonl, write_pairs
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.alignment import evaluate_alignment, read_pairs


def direct(
    embedder: Embedder, pairs: list, dimensions: int | None = None
) -> tuple[float, float, float]:
    """The definitions, written out with loops over plain floats."""
    images = embedder.encode(
        [image for image, _ in pairs], "retrieval.passage", dimensions=dimensions
    ).embeddings
    texts = embedder.encode(
        [text for _, text in pairs], "retrieval.query", dimensions=dimensions
    ).embeddings
    n = len(pairs)
    cos = [[float(images[i].double() @ texts[j].double()) for j in range(n)] for i in range(n)]
    matching = sum(cos[i][i] for i in range(n)) / n
    random_pairs = sum(cos[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    dim = images[0].shape[0]
    centre_i = [sum(float(v[d]) for v in images) / n for d in range(dim)]
    centre_t = [sum(float(v[d]) for v in texts) / n for d in range(dim)]
    gap = sum((a - b) ** 2 for a, b in zip(centre_i, centre_t)) ** 0.5
    return matching, random_pairs, gap


def test_alignment_equals_a_direct_computation(tiny_v4: Embedder, tmp_path: Path) -> None:
    pairs = read_pairs(write_pairs(tmp_path / "pairs", 5))
    result = evaluate_alignment(tiny_v4, pairs)
    matching, random_pairs, gap = direct(tiny_v4, pairs)
    assert result.pairs == 5
    assert result.matching_cosine == pytest.approx(matching, abs=1e-6)
    assert result.random_cosine == pytest.approx(random_pairs, abs=1e-6)
    assert result.modality_gap == pytest.approx(gap, abs=1e-6)
    cut = evaluate_alignment(tiny_v4, pairs, dimensions=16)
    assert cut.matching_cosine == pytest.approx(direct(tiny_v4, pairs, 16)[0], abs=1e-6)


def test_sample_of_pairs(tiny_v4: Embedder, tmp_path: Path) -> None:
    pairs = read_pairs(write_pairs(tmp_path / "pairs", 6))
    result = evaluate_alignment(tiny_v4, pairs, sample=3, seed=4)
    chosen = random.Random(4).sample(pairs, 3)
    assert result.pairs == 3
    assert result.matching_cosine == pytest.approx(direct(tiny_v4, chosen)[0], abs=1e-6)


def test_pairs_from_a_datasets_folder(tmp_path: Path) -> None:
    import datasets

    table = datasets.Dataset.from_dict(
        {"image": [color_image(i) for i in range(3)], "caption": sentences(3)},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string")}
        ),
    )
    table.save_to_disk(str(tmp_path / "saved"))
    pairs = read_pairs(tmp_path / "saved")
    assert [caption for _, caption in pairs] == sentences(3)
    assert all(isinstance(image["image"], bytes) for image, _ in pairs)


def test_pairs_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"image": "missing.png", "text": "a caption"}])
    with pytest.raises(InvalidInput, match=rf"{path}:1: image file .*missing.png does not exist"):
        read_pairs(path)
    write_jsonl(path, [{"image": "x.png"}])
    with pytest.raises(InvalidInput, match=rf"{path}:1: expected 'image' \(a path\) and 'text'"):
        read_pairs(path)
    with pytest.raises(InvalidInput, match="no such file or folder"):
        read_pairs(tmp_path / "nothing")
