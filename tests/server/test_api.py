"""The embeddings API against a live server: every form and encoding equals the library result."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.helpers import pdf_bytes, png_bytes
from uniembed.core.wire import decode_base64, decode_binary, decode_ubinary
from uniembed.embedder import Embedder

TEXTS = ["A cat sat on the mat.", "Quantum chromodynamics", "", "naïve café ☕"]


def embed(client: httpx.Client, **body: object) -> dict:
    response = client.post("/v1/embeddings", json={"model": "fake-model", **body})
    assert response.status_code == 200, response.text
    return response.json()


def library(embedder: Embedder, items: list, **kwargs: object) -> list[np.ndarray]:
    return [e.numpy() for e in embedder.encode(items, **kwargs).embeddings]


def test_jina_form_with_a_list_of_strings_matches_the_library(client, fake_embedder):
    body = embed(client, input=TEXTS, task="retrieval.passage")
    expected = library(fake_embedder, TEXTS, task="retrieval.passage")
    assert body["model"] == "fake-model" and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert all(d["object"] == "embedding" for d in body["data"])
    for data, vector in zip(body["data"], expected):
        assert np.array_equal(np.asarray(data["embedding"], dtype=np.float32), vector)
    tokens = fake_embedder.encode(TEXTS, task="retrieval.passage").total_tokens
    assert body["usage"] == {"total_tokens": tokens, "prompt_tokens": tokens}


def test_a_single_string_and_text_objects_give_the_same_vectors(client):
    single = embed(client, input="hello")["data"][0]["embedding"]
    objects = embed(client, input=[{"text": "hello"}, "hello"])["data"]
    assert objects[0]["embedding"] == single == objects[1]["embedding"]


@pytest.mark.parametrize("task", ["retrieval.query", "text-matching", "code.query", "code.passage"])
def test_tasks_dimensions_and_normalized(client, fake_embedder, task):
    body = embed(client, input=TEXTS[:2], task=task, dimensions=16, normalized=False)
    expected = library(fake_embedder, TEXTS[:2], task=task, dimensions=16, normalized=False)
    for data, vector in zip(body["data"], expected):
        assert len(data["embedding"]) == 16
        assert np.array_equal(np.asarray(data["embedding"], dtype=np.float32), vector)
    assert abs(np.linalg.norm(expected[0]) - 1) > 1e-3  # really unnormalised


def test_every_embedding_type_decodes_to_the_library_result(client, fake_embedder):
    expected = library(fake_embedder, TEXTS)
    float_ = embed(client, input=TEXTS, embedding_type="float")["data"]
    b64 = embed(client, input=TEXTS, embedding_type="base64")["data"]
    binary = embed(client, input=TEXTS, embedding_type="binary")["data"]
    ubinary = embed(client, input=TEXTS, embedding_type="ubinary")["data"]
    for i, vector in enumerate(expected):
        bits = (vector > 0).astype(np.uint8)
        assert np.array_equal(np.asarray(float_[i]["embedding"], dtype=np.float32), vector)
        assert np.array_equal(decode_base64(b64[i]["embedding"]), vector)
        assert np.array_equal(decode_binary(binary[i]["embedding"], dim=32), bits)
        assert np.array_equal(decode_ubinary(ubinary[i]["embedding"], dim=32), bits)
        assert len(ubinary[i]["embedding"]) == 4


def test_a_list_of_embedding_types_gives_a_dict_per_item(client, fake_embedder):
    data = embed(client, input=TEXTS[:1], embedding_type=["ubinary", "float"])["data"][0][
        "embedding"
    ]
    assert list(data) == ["ubinary", "float"]
    vector = library(fake_embedder, TEXTS[:1])[0]
    assert np.array_equal(np.asarray(data["float"], dtype=np.float32), vector)
    assert np.array_equal(decode_ubinary(data["ubinary"], dim=32), (vector > 0).astype(np.uint8))


def test_encoding_type_is_accepted_as_the_alias_some_clients_send(client):
    aliased = embed(client, input="x", encoding_type="ubinary")["data"][0]["embedding"]
    assert aliased == embed(client, input="x", embedding_type="ubinary")["data"][0]["embedding"]


def test_the_official_openai_client_works_in_both_encodings(server, fake_embedder):
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    expected = library(fake_embedder, TEXTS)
    for encoding in ("float", "base64"):
        result = api.embeddings.create(model="fake-model", input=TEXTS, encoding_format=encoding)
        assert [d.index for d in result.data] == [0, 1, 2, 3]
        for data, vector in zip(result.data, expected):
            got = (
                decode_base64(data.embedding)
                if encoding == "base64"
                else np.asarray(data.embedding, np.float32)
            )
            assert np.array_equal(got, vector)
    default = api.embeddings.create(
        model="fake-model", input="hi", dimensions=8
    )  # client asks base64
    assert np.array_equal(
        np.asarray(default.data[0].embedding, np.float32),
        library(fake_embedder, ["hi"], dimensions=8)[0],
    )
    assert default.usage.total_tokens == default.usage.prompt_tokens > 0
    listed = [m.id for m in api.models.list().data]
    assert listed[0] == "fake-model" and "fake-model-retrieval-passage" in listed


def test_late_chunking_matches_the_library(client, fake_embedder):
    chunks = ["The first chunk.", " The second one", " and the last."]
    body = embed(client, input=chunks, late_chunking=True, task="retrieval.passage")
    result = fake_embedder.encode(chunks, task="retrieval.passage", late_chunking=True)
    assert len(body["data"]) == 3
    for data, vector in zip(body["data"], result.embeddings):
        assert np.array_equal(np.asarray(data["embedding"], dtype=np.float32), vector.numpy())
    assert body["usage"]["total_tokens"] == result.total_tokens
    plain = embed(client, input=chunks, task="retrieval.passage")["data"]
    assert plain[1]["embedding"] != body["data"][1]["embedding"]  # chunks saw their context


def test_multivectors_come_as_embeddings_lists(client, fake_embedder):
    body = embed(client, input=TEXTS[:2], return_multivector=True, embedding_type="base64")
    expected = library(fake_embedder, TEXTS[:2], multivector=True)
    for data, matrix in zip(body["data"], expected):
        assert "embedding" not in data
        decoded = np.stack([decode_base64(row) for row in data["embeddings"]])
        assert decoded.shape == matrix.shape and matrix.shape[1] == 8
        assert np.array_equal(decoded, matrix)


def test_images_as_base64_and_data_uri_match_the_library(client, fake_embedder):
    raw = png_bytes((200, 30, 90), (20, 12))
    b64 = base64.b64encode(raw).decode()
    body = embed(
        client, input=[{"image": b64}, {"image": f"data:image/png;base64,{b64}"}, {"text": "x"}]
    )
    expected = library(fake_embedder, [Image.open(io.BytesIO(raw)), "x"])
    assert body["data"][0]["embedding"] == body["data"][1]["embedding"]
    assert np.array_equal(np.asarray(body["data"][0]["embedding"], np.float32), expected[0])
    assert np.array_equal(np.asarray(body["data"][2]["embedding"], np.float32), expected[1])


def test_every_pdf_page_is_one_entry_in_order(client, fake_embedder):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    pdf = base64.b64encode(pdf_bytes(colors, (60, 80))).decode()
    body = embed(client, input=["before", {"pdf": pdf}, "after"])
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3, 4]
    expected = library(fake_embedder, ["before", {"pdf": pdf}, "after"])
    assert len(expected) == 5
    for data, vector in zip(body["data"], expected):
        assert np.array_equal(np.asarray(data["embedding"], np.float32), vector)
    pages = [d["embedding"] for d in body["data"][1:4]]
    assert pages[0] != pages[1] != pages[2]


def test_model_may_be_omitted_and_named_by_alias(client):
    reply = client.post("/v1/embeddings", json={"input": "x"})
    assert reply.status_code == 200 and reply.json()["model"] == "fake-model"


def test_models_health_ready_docs(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert (
        card["id"] == "fake-model" and card["object"] == "model" and card["owned_by"] == "uniembed"
    )
    assert card["info"]["dimensions"] == 32 and "code.query" in card["info"]["tasks"]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "models": ["fake-model"]}
    schema = client.get("/openapi.json").json()
    assert "/v1/embeddings" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_tokens_and_batches(server, client):
    before = server.metric("uniembed_tokens_total", model="fake-model")
    body = embed(client, input=["abc", "de"])
    text = client.get("/metrics").text
    assert 'uniembed_requests_total{path="/v1/embeddings",status="200"}' in text
    assert "uniembed_request_duration_seconds_bucket" in text
    assert 'uniembed_queue_depth{model="fake-model"} 0.0' in text
    assert "uniembed_batch_size_bucket" in text
    assert (
        server.metric("uniembed_tokens_total", model="fake-model") - before
        == body["usage"]["total_tokens"]
    )
