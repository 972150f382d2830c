"""Both real families through ``uniembed.load``: the official v3 call form and late chunking,
checked against token states computed independently of the chunking code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uniembed.chunking import sentence_chunker
from uniembed.errors import InvalidInput
from uniembed.models.base import Row
from uniembed.models.registry import detect_family


def test_load_detects_each_family(tiny_v3, tiny_v4) -> None:
    assert (
        tiny_v3.info.family == "jina-embeddings-v3" and tiny_v4.info.family == "jina-embeddings-v4"
    )
    assert (
        detect_family({"architectures": ["XLMRobertaModel"], "lora_adaptations": ["a"]})
        == "jina-embeddings-v3"
    )
    with pytest.raises(Exception, match="unsupported model"):
        detect_family({"architectures": ["BertModel"], "model_type": "bert"})


def test_v3_official_encode_call(tiny_v3) -> None:
    texts = ["what is late chunking", "Late chunking pools token embeddings per chunk."]
    result = tiny_v3.encode(texts, task="retrieval.query", truncate_dim=16)
    array = np.asarray(result)
    assert array.shape == (2, 16) and len(result) == 2
    full = tiny_v3.encode(texts, task="retrieval.query")
    np.testing.assert_allclose(
        array[1], torch.nn.functional.normalize(full[1][:16], dim=0).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InvalidInput, match="truncate_dim"):
        tiny_v3.encode(texts, task="retrieval.query", truncate_dim=5)
    with pytest.raises(InvalidInput, match="multi-vector"):
        tiny_v3.encode(texts, task="retrieval.query", multivector=True)


@pytest.mark.parametrize("family", ["tiny_v3", "tiny_v4"])
def test_late_chunking_equals_span_means_of_the_document(
    family: str, request: pytest.FixtureRequest
) -> None:
    embedder, model = request.getfixturevalue(family), request.getfixturevalue(f"{family}_model")
    chunks = [
        "Solar panels turn light into power.",
        "Cells are made of silicon.",
        "太陽光は電気になります。",
    ]
    vectors = embedder.encode(chunks, task="retrieval.passage", late_chunking=True).embeddings
    spec = model.resolve_task("retrieval.passage")
    text = " ".join(chunks)
    tokenized = model.tokenize(spec.prefix + text)
    ids = tokenized.ids
    one_span_per_token = tuple((i, i + 1) for i in range(len(ids)))
    row = Row(torch.tensor(ids), spec.adapter, one_span_per_token)
    states = model.forward([row])[
        0
    ].pooled  # (tokens, dim): every token's state, the whole document once
    # A token belongs to the chunk holding its first character; one starting on the joining space
    # belongs to the next chunk (it carries that chunk's first word); the prefix goes to the first
    # chunk and trailing special tokens to the last.
    starts = [len(spec.prefix)] + [len(spec.prefix) + text.index(c) - 1 for c in chunks[1:]]
    owners = []
    for (begin, end), special in zip(tokenized.offsets, tokenized.special):
        owners.append(None if special or begin == end else sum(begin >= s for s in starts) - 1)
    filled, current = [], 0
    for owner in owners:
        current = owner if owner is not None else current
        filled.append(max(current, 0))
    for index, vector in enumerate(vectors):
        mask = torch.tensor([o == index for o in filled])
        expected = torch.nn.functional.normalize(states[mask].mean(0), dim=0)
        torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)
    alone = embedder.encode(chunks, task="retrieval.passage").embeddings
    if embedder.info.family == "jina-embeddings-v4":
        # causal attention: the first chunk sees no later text, so it equals the chunk encoded
        # alone; every later chunk sees the earlier ones and differs
        torch.testing.assert_close(vectors[0], alone[0], atol=1e-5, rtol=0)
        assert all(float(a @ b) < 0.9999 for a, b in zip(vectors[1:], alone[1:]))
    else:  # bidirectional: every chunk sees the whole document
        assert all(float(a @ b) < 0.9999 for a, b in zip(vectors, alone))


@pytest.mark.parametrize("family", ["tiny_v3", "tiny_v4"])
def test_windowed_late_chunking_equals_single_pass_when_it_fits(
    family: str, request: pytest.FixtureRequest
) -> None:
    embedder = request.getfixturevalue(family)
    text = "One short sentence. Another one follows! And a third? " * 6
    single = embedder.embed_document(text, chunker=sentence_chunker(), task="retrieval.passage")
    fits = embedder.embed_document(
        text, chunker=sentence_chunker(), task="retrieval.passage", window=4096, overlap=16
    )
    torch.testing.assert_close(single, fits, atol=0, rtol=0)
    windowed = embedder.embed_document(
        text, chunker=sentence_chunker(), task="retrieval.passage", window=32, overlap=8
    )
    assert windowed.shape == single.shape and not torch.allclose(windowed, single, atol=1e-4)
