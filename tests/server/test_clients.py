"""Real client libraries against a live server: they read our errors, and task-carrying model names
give them the library's passage and query vectors. Nothing here reaches beyond the local server."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from uniembed.embedder import Embedder

PASSAGES = ["Solar panels turn sunlight into electricity.", "The Eiffel Tower is in Paris."]
QUERY = "how do solar panels work"


@pytest.fixture(scope="module")
def live_v4(tiny_v4: Embedder) -> Iterator[str]:
    """A live server for the tiny v4 served as 'jina-embeddings-v4'; yields its /v1 base URL."""
    from uniembed.server.app import create_app
    from uniembed.server.settings import ServerSettings
    from uniembed.testing.live import LiveServer

    settings = ServerSettings(models=("jina-embeddings-v4",))
    with LiveServer(create_app(settings, {"jina-embeddings-v4": tiny_v4})) as live:
        yield f"{live.url}/v1"


def library(embedder: Embedder, texts: list[str], task: str) -> np.ndarray:
    return np.stack([e.numpy() for e in embedder.encode(texts, task=task).embeddings])


def test_the_openai_client_shows_the_servers_reason(live_v4):
    client = openai.OpenAI(base_url=live_v4, api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="jina-embeddings-v4", input="x", dimensions=4096)
    assert "dimensions must be between 1 and" in str(caught.value)
    assert caught.value.code == "invalid_option" and caught.value.param == "dimensions"
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="input 0: image"):
        client.embeddings.create(model="jina-embeddings-v4", input=["data:image/png;base64,AAAA"])


def test_task_names_give_the_openai_client_the_task(live_v4, tiny_v4):
    client = openai.OpenAI(base_url=live_v4, api_key="unused", max_retries=0)
    passages = client.embeddings.create(
        model="jina-embeddings-v4-retrieval-passage", input=PASSAGES
    )
    got = np.array([d.embedding for d in passages.data], np.float32)
    np.testing.assert_allclose(got, library(tiny_v4, PASSAGES, "retrieval.passage"), atol=2e-6)
    assert passages.model == "jina-embeddings-v4-retrieval-passage"
    plain = client.embeddings.create(
        model="jina-embeddings-v4", input=PASSAGES
    )  # the model's default task
    np.testing.assert_allclose(
        np.array([d.embedding for d in plain.data], np.float32),
        library(tiny_v4, PASSAGES, "retrieval.query"),
        atol=2e-6,
    )
    assert not np.allclose(got, np.array([d.embedding for d in plain.data], np.float32), atol=1e-3)
    with pytest.raises(openai.UnprocessableEntityError, match="contradicts"):
        client.embeddings.create(
            model="jina-embeddings-v4-retrieval-passage",
            input="x",
            extra_body={"task": "retrieval.query"},
        )


def test_langchain_openai_embeddings_on_task_names_equal_the_library(live_v4, tiny_v4):
    from langchain_openai import OpenAIEmbeddings

    def embeddings(model: str) -> OpenAIEmbeddings:
        # check_embedding_ctx_length=False: send the texts, not tiktoken ids (and load no tiktoken
        # files)
        return OpenAIEmbeddings(
            model=model,
            base_url=live_v4,
            api_key="unused",
            check_embedding_ctx_length=False,
            max_retries=0,
        )

    documents = embeddings("jina-embeddings-v4-retrieval-passage").embed_documents(PASSAGES)
    query = embeddings("jina-embeddings-v4-retrieval-query").embed_query(QUERY)
    np.testing.assert_allclose(
        np.array(documents, np.float32), library(tiny_v4, PASSAGES, "retrieval.passage"), atol=2e-6
    )
    np.testing.assert_allclose(
        np.array([query], np.float32), library(tiny_v4, [QUERY], "retrieval.query"), atol=2e-6
    )


def test_llama_index_openai_embedding_on_task_names_equals_the_library(live_v4, tiny_v4):
    from llama_index.embeddings.openai import OpenAIEmbedding

    def embedding(model: str) -> OpenAIEmbedding:
        # model_name= (not model=, which must be one of OpenAI's names) is sent as the model as is
        return OpenAIEmbedding(model_name=model, api_base=live_v4, api_key="unused", max_retries=0)

    documents = embedding("jina-embeddings-v4-retrieval-passage").get_text_embedding_batch(PASSAGES)
    query = embedding("jina-embeddings-v4-retrieval-query").get_query_embedding(QUERY)
    np.testing.assert_allclose(
        np.array(documents, np.float32), library(tiny_v4, PASSAGES, "retrieval.passage"), atol=2e-6
    )
    np.testing.assert_allclose(
        np.array([query], np.float32), library(tiny_v4, [QUERY], "retrieval.query"), atol=2e-6
    )


def test_openai_base64_default_stands_beside_a_jina_embedding_type(live_v4, tiny_v4):
    """The openai client always sends encoding_format (base64 unless asked): extra_body's
    embedding_type wins, and the client passes the non-string values through."""
    client = openai.OpenAI(base_url=live_v4, api_key="unused", max_retries=0)
    packed = client.embeddings.create(
        model="jina-embeddings-v4",
        input=PASSAGES,
        extra_body={"embedding_type": "ubinary", "task": "retrieval.passage"},
    )
    vectors = library(tiny_v4, PASSAGES, "retrieval.passage")
    assert [d.embedding for d in packed.data] == [np.packbits(v > 0).tolist() for v in vectors]


def test_the_jina_apis_image_forms_equal_image(serve, image_url):
    from uniembed.inputs.limits import InputLimits

    url, raw = image_url
    live = serve(input_limits=InputLimits(allow_private_urls=True))
    encoded = base64.b64encode(raw).decode()
    forms = [
        {"image": encoded},
        {"url": url},
        {"bytes": encoded},
        f"data:image/png;base64,{encoded}",
        {"image": url},
    ]
    reply = httpx.post(f"{live.url}/v1/embeddings", json={"input": forms}, timeout=30)
    assert reply.status_code == 200, reply.text
    vectors = [d["embedding"] for d in reply.json()["data"]]
    assert all(vector == vectors[0] for vector in vectors)
    text = httpx.post(
        f"{live.url}/v1/embeddings", json={"input": [f"a data:image/png;base64,{encoded}"]}
    ).json()
    assert (
        text["data"][0]["embedding"] != vectors[0]
    )  # only a string that IS a data URI is an image
