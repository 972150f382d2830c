"""Every limit and error path: status, a {"detail": …} body, and a message naming the problem."""

from __future__ import annotations

import base64
import io
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from uniembed.embedder import Embedder
from uniembed.errors import (
    FetchError,
    InputTooLarge,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
)
from uniembed.inputs.limits import InputLimits
from uniembed.server.auth import bearer_token, key_matches
from uniembed.server.errors import (
    ERROR_CODES,
    ERROR_TABLE,
    BatchFailed,
    Unauthorized,
    status_of,
)
from uniembed.server.registry import ModelRegistry
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel

DOCS = Path(__file__).parents[2] / "docs" / "server.md"


def post(live, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/embeddings", json=body, timeout=20, **kwargs)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in str(detail), detail


def test_the_error_table():
    assert [
        status_of(e("m"))
        for e in (
            InvalidInput,
            FetchError,
            Unauthorized,
            ModelNotFound,
            InputTooLarge,
            Overloaded,
            NotReady,
            BatchFailed,
        )
    ] == [400, 400, 401, 404, 413, 429, 503, 500]


def test_the_documented_codes_are_the_served_codes():
    """docs/server.md's table lists exactly the codes of ERROR_CODES, each with its status, and
    every error type's code is one of them."""
    rows = [line.split("|") for line in DOCS.read_text().splitlines() if line.startswith("| 4")]
    rows += [line.split("|") for line in DOCS.read_text().splitlines() if line.startswith("| 5")]
    documented = {
        code.strip(): int(status) for _, status, codes, *_ in rows for code in codes.split(",")
    }
    assert {code.strip("` "): status for code, status in documented.items()} == ERROR_CODES
    assert set(ERROR_TABLE.values()) <= set(ERROR_CODES)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "nope", "input": "x"}, 404, ["nope", "fake-model"]),
        (
            {"input": "x", "task": "retrieval.everything"},
            400,
            ["retrieval.everything", "code.query"],
        ),
        ({"input": "x", "dimensions": 33}, 422, ["dimensions", "32"]),  # one code for any bad value
        ({"input": "x", "dimensions": 8, "return_multivector": True}, 422, ["single vectors"]),
        ({"input": "x", "dimensions": 0}, 422, ["dimensions"]),
        ({"input": "x", "dimensions": 70_000}, 422, ["dimensions must be between 1 and 32"]),
        ({"input": ["a"] * 65_537}, 413, ["65537 inputs", "max_items_per_request"]),
        ({"input": "x", "dimension": 8}, 422, ["dimension", "Extra inputs"]),
        ({"input": "x", "embedding_type": "int4"}, 422, ["embedding_type"]),
        ({"input": "x", "embedding_type": []}, 422, ["embedding_type"]),
        (
            {"input": "x", "embedding_type": "ubinary", "encoding_format": "float"},
            422,
            ["contradicts"],
        ),
        ({"input": "x", "encoding_format": "binary"}, 422, ["encoding_format"]),
        ({"input": []}, 422, ["input"]),
        ({"input": [{"text": "a", "image": "b"}]}, 422, ["exactly one of"]),
        ({"input": [{"video": "a"}]}, 422, ["exactly one of"]),
        ({"input": [None]}, 422, ["exactly one of"]),
        ({"input": 5}, 422, ["input must be"]),
        ({"input": "x", "truncate": "yes"}, 422, ["truncate"]),
        ({}, 422, ["input"]),
        ({"input": ["a", {"image": "bm90IGFuIGltYWdl"}]}, 400, ["input 1"]),
        ({"input": [{"pdf": "bm90IGEgcGRm"}]}, 400, ["input 0"]),
        ({"input": [{"image": "file:///etc/passwd"}]}, 400, ["input 0"]),
        (
            {"input": ["a", "b"], "late_chunking": True, "return_multivector": True},
            422,
            ["late_chunking"],
        ),
        (
            {"input": ["a", {"image": "data:image/png;base64,AAAA"}], "late_chunking": True},
            400,
            ["input 1"],
        ),
    ],
)
def test_bad_requests_get_the_right_status_and_message(server, body, status, words):
    assert_error(post(server, body), status, *words)


def test_malformed_json_and_wrong_routes(server):
    bad = httpx.post(
        f"{server.url}/v1/embeddings",
        content=b'{"input": ',
        headers={"content-type": "application/json"},
    )
    assert_error(bad, 400, "not valid JSON")
    assert bad.json()["error"]["code"] == "invalid_json"
    assert "input" not in bad.json()["detail"][0]  # inputs are never echoed back
    wrong_method = httpx.get(f"{server.url}/v1/embeddings")
    assert_error(wrong_method, 405, "Method Not Allowed")
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    no_route = httpx.get(f"{server.url}/v2/nothing")
    assert_error(no_route, 404, "Not Found")
    assert no_route.json()["error"]["code"] == "not_found"
    assert server.metric("uniembed_requests_total", path="other", status="404") >= 1


def test_body_size_is_refused_from_content_length_before_reading(serve):
    live = serve(max_body_bytes=500)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )  # no body sent at all
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "limit of 500 bytes" in reply
    assert_error(post(live, {"input": "x" * 490}), 413, "500 bytes")
    assert post(live, {"input": "x" * 400}).status_code == 200


def test_body_size_is_counted_while_a_chunked_body_streams(serve):
    live = serve(max_body_bytes=1000)

    def chunks():
        yield b'{"input": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    reply = httpx.post(
        f"{live.url}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in reply.request.headers
    assert_error(reply, 413, "1000 bytes")


def test_items_and_tokens_limits(serve):
    live = serve(max_items_per_request=3, max_tokens_per_item=20, max_tokens_per_request=50)
    assert_error(post(live, {"input": ["a", "b", "c", "d"]}), 413, "4 inputs", "limit of 3")
    pdf = io.BytesIO()
    pages = [Image.new("RGB", (30, 30), (i * 60, 0, 0)) for i in range(3)]
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:])
    pdf_input = {"pdf": base64.b64encode(pdf.getvalue()).decode()}
    assert_error(
        post(live, {"input": ["a", pdf_input]}),
        413,
        "4 inputs",
        "PDF page",
        "max_items_per_request",
    )
    long = "y" * 40
    assert_error(post(live, {"input": [long]}), 413, "input 0", "truncate")
    truncated = post(live, {"input": [long], "truncate": True}).json()
    expected = Embedder(FakeModel()).encode([long], truncate=True, max_tokens=20)
    assert truncated["usage"]["total_tokens"] == 20
    assert np.array_equal(
        np.asarray(truncated["data"][0]["embedding"], np.float32), expected.embeddings[0].numpy()
    )
    assert_error(
        post(live, {"input": ["z" * 10] * 3}), 413, "57 tokens", "limit of 50"
    )  # 3 × (7 + 10 + 2)


def test_the_token_budget_is_estimated_before_and_counted_while_tokenising(serve):
    live = serve(max_tokens_per_request=4000)
    texts = ["word " * 100] * 10  # 5,000 characters: planned on a worker thread, 5,090 tokens
    counted = post(live, {"input": texts})
    assert_error(counted, 413, "tokens or more", "limit of 4000")  # exact: under twice the limit
    live = serve(max_tokens_per_request=2000)
    assert_error(post(live, {"input": texts}), 413, "about 5000 tokens", "estimated")


def test_input_limits_apply_to_text_and_pdf_pages(serve):
    live = serve(input_limits=InputLimits(max_text_chars=10, max_pdf_pages=1))
    assert_error(post(live, {"input": ["ok", "x" * 11]}), 413, "input 1")
    pdf = io.BytesIO()
    pages = [Image.new("RGB", (30, 30)) for _ in range(2)]
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:])
    assert_error(
        post(live, {"input": [{"pdf": base64.b64encode(pdf.getvalue()).decode()}]}), 413, "input 0"
    )


def test_api_keys(serve):
    live = serve(api_keys=("first-key", "second-key"))
    assert_error(post(live, {"input": "x"}), 401, "API key")
    wrong = post(live, {"input": "x"}, headers={"Authorization": "Bearer first-keyX"})
    assert_error(wrong, 401, "missing or invalid API key")
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert_error(post(live, {"input": "x"}, headers={"Authorization": "Basic first-key"}), 401)
    assert (
        post(live, {"input": "x"}, headers={"Authorization": "Bearer second-key"}).status_code
        == 200
    )
    assert (
        post(live, {"input": "x"}, headers={"Authorization": "bearer first-key"}).status_code == 200
    )
    assert_error(httpx.get(f"{live.url}/v1/models"), 401)
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{live.url}{open_path}").status_code == 200
    assert key_matches("a", ["b", "a"]) and not key_matches("", ["a"])
    assert bearer_token("Bearer   ") is None


def test_url_fetch_is_refused_for_loopback_unless_allowed(serve, image_url):
    url, raw = image_url
    assert_error(post(serve(), {"input": [{"image": url}]}), 400, "input 0", "127.0.0.1")
    allowed = serve(input_limits=InputLimits(allow_private_urls=True))
    body = post(allowed, {"input": [{"image": url}]}).json()
    expected = Embedder(FakeModel()).encode([Image.open(io.BytesIO(raw))]).embeddings[0]
    assert np.array_equal(np.asarray(body["data"][0]["embedding"], np.float32), expected.numpy())


def test_several_models_are_addressed_by_name_or_last_path_component(serve):
    embedders = {
        "org/small": Embedder(FakeModel("small", seed=1)),
        "/srv/models/big": Embedder(FakeModel("big", dim=64)),
    }
    live = serve(embedders)
    assert (
        len(post(live, {"model": "org/small", "input": "x"}).json()["data"][0]["embedding"]) == 32
    )
    assert post(live, {"model": "small", "input": "x"}).json()["model"] == "org/small"
    assert len(post(live, {"model": "big", "input": "x"}).json()["data"][0]["embedding"]) == 64
    assert post(live, {"input": "x"}).json()["model"] == "org/small"
    assert_error(post(live, {"model": "srv", "input": "x"}), 404, "org/small", "/srv/models/big")
    assert sorted(live.app.state.engines) == ["/srv/models/big", "org/small"]


def test_ambiguous_aliases_resolve_only_by_served_name():
    registry = ModelRegistry({"a/m": Embedder(FakeModel("x")), "b/m": Embedder(FakeModel("y"))})
    assert registry.resolve("a/m")[0] == "a/m" and registry.resolve("y")[0] == "b/m"
    with pytest.raises(ModelNotFound):
        registry.resolve("m")


def test_settings_are_validated():
    with pytest.raises(InvalidInput, match="listed twice"):
        ServerSettings(models=("a", "a"))
    with pytest.raises(InvalidInput, match="API keys"):
        ServerSettings(api_keys=(" padded",))
    with pytest.raises(InvalidInput, match="max_tokens_per_item"):
        ServerSettings(max_tokens_per_item=0)
    with pytest.raises(InvalidInput, match="one served model name per model"):
        ServerSettings(models=("a", "b"), served_model_names=("x",))
    with pytest.raises(InvalidInput, match="same name"):
        ServerSettings(models=("org/v4", "/models/v4"))
    with pytest.raises(InvalidInput, match="header_timeout"):
        ServerSettings(header_timeout=0)
    assert ServerSettings(
        models=("org/v4", "/models/v4"), served_model_names=("a", "b")
    ).served_names == ("a", "b")
    assert "secret" not in repr(ServerSettings(api_keys=("secret",)))


def test_not_ready_before_the_workers_start():
    from uniembed.server.app import create_app

    app = create_app(ServerSettings(models=("m",)), {"m": Embedder(FakeModel())})
    with pytest.raises(NotReady):
        app.state.engines["m"].submit([])
    assert status_of(InputTooLarge("x")) == 413


class NaNModel(FakeModel):
    """FakeModel whose vectors are NaN for inputs containing "overflow" (a float16 overflow,
    say)."""

    def forward(self, batch):
        outputs = super().forward(batch)
        for row, output in zip(batch, outputs):
            if len(row.input_ids) > 30:
                output.pooled[:] = float("nan")
        return outputs


@pytest.mark.parametrize("embedding_type", ["float", "base64"])
def test_non_finite_model_output_is_a_clear_500_and_the_server_stays_up(serve, embedding_type):
    live = serve({"fake-model": Embedder(NaNModel())})
    failed = post(live, {"input": ["fine", "overflow " * 4], "embedding_type": embedding_type})
    assert_error(failed, 500, "non-finite", "output 1")
    assert post(live, {"input": ["fine"]}).status_code == 200
