"""Connection limits, timeouts, load shedding and request bodies (size, time, Content-Encoding) on a
live server, and the routes and error forms around them."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib

import httpx
import pytest

from uniembed.embedder import Embedder


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(data)
        return read_all(raw)


def read_all(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_at_the_connection_limit_the_longest_idle_connection_is_closed(serve):
    live = serve(max_connections=50, header_timeout=60)
    sockets = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(80)]
    try:
        assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200
        oldest = sum(closed_by_server(sock, 2) for sock in sockets[:31])
        newest = sum(closed_by_server(sock, 0.05) for sock in sockets[-19:])
        assert (oldest, newest) == (31, 0)  # 30 evicted for the 30 over the limit, one for /health
    finally:
        for sock in sockets:
            sock.close()
    assert live.metric("uniembed_connections_closed_total", reason="evicted") >= 31


def test_with_every_connection_busy_a_new_one_gets_503_and_retry_after(serve, gated):
    live = serve({"fake-model": Embedder(gated)}, max_connections=2, header_timeout=60)
    gated.gate.clear()
    request = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\n"
        b'Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{"input": "x"}'
    )
    busy = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(request)  # a whole request: being worked on (the model is held)
        assert gated.entered.wait(10)
        time.sleep(0.2)
        reply = raw_request(live.port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply.lower()
        assert b'"code":"overloaded"' in reply
    finally:
        gated.gate.set()
        for sock in busy:
            sock.close()
    assert live.metric("uniembed_connections_closed_total", reason="refused") == 1


def test_at_the_connection_limit_the_longest_upload_is_closed_when_none_is_idle(serve):
    live = serve(max_connections=4, header_timeout=60)
    uploading = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"inp'
    )
    slow = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(uploading)  # headers complete, the body trickles: no work yet
            time.sleep(0.05)
        response = httpx.post(f"{live.url}/v1/embeddings", json={"input": "x"}, timeout=10)
        assert response.status_code == 200, response.text
        assert closed_by_server(slow[0], 2)  # the one sending its body longest made room
        assert not any(closed_by_server(sock, 0.05) for sock in slow[2:])
    finally:
        for sock in slow:
            sock.close()
    assert live.metric("uniembed_connections_closed_total", reason="evicted_upload") >= 1


def test_slow_bodies_hold_no_concurrency_slot(serve):
    live = serve(max_concurrent_requests=2, header_timeout=60)
    uploading = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"inp'
    )
    slow = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(6)]
    try:
        for sock in slow:
            sock.sendall(uploading)
        time.sleep(0.2)
        response = httpx.post(f"{live.url}/v1/embeddings", json={"input": "x"}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        for sock in slow:
            sock.close()
    assert live.metric("uniembed_requests_shed_total") == 0


def test_a_connection_that_never_completes_its_headers_is_closed(serve):
    live = serve(header_timeout=0.5)
    with (
        socket.create_connection(("127.0.0.1", live.port)) as silent,
        socket.create_connection(("127.0.0.1", live.port)) as slow,
    ):
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        assert closed_by_server(silent, 5) and closed_by_server(slow, 5)
        assert time.monotonic() - started < 2
    # a keep-alive connection between requests is idle too: its next headers get the same time
    with socket.create_connection(("127.0.0.1", live.port)) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        response = b""
        while not response.endswith(b'{"status":"ok"}'):
            response += kept.recv(4096)
        assert response.startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /he")
        assert closed_by_server(kept, 5)
    assert live.metric("uniembed_connections_closed_total", reason="header_timeout") == 3


def test_a_body_that_does_not_arrive_in_time_gets_408(serve):
    live = serve(body_timeout=0.5)
    started = time.monotonic()
    reply = raw_request(
        live.port,
        b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"input": ',
    )
    assert reply.startswith(b"HTTP/1.1 408") and b"within 0.5 s" in reply
    assert time.monotonic() - started < 3
    assert live.metric("uniembed_connections_closed_total", reason="body_timeout") == 1


def test_requests_over_the_concurrency_limit_get_503_but_health_answers(serve, gated):
    live = serve({"fake-model": Embedder(gated)}, max_concurrent_requests=1)
    gated.gate.clear()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        holder = threading.Thread(
            target=lambda: http.post("/v1/embeddings", json={"input": "hold"})
        )
        holder.start()
        assert gated.entered.wait(10)
        shed = httpx.post(f"{live.url}/v1/embeddings", json={"input": "x"})
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert (
            shed.json()["error"]["code"] == "overloaded"
            and "requests in progress" in shed.json()["detail"]
        )
        assert httpx.get(f"{live.url}/health").status_code == 200
        assert httpx.get(f"{live.url}/metrics").status_code == 200
        gated.gate.set()
        holder.join(10)
        assert http.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    assert live.metric("uniembed_requests_shed_total") == 1


BODY = b'{"input": ["compressed", "bodies"], "task": "retrieval.passage"}'


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", bytes),
    ],
)
def test_compressed_bodies_are_accepted(server, encoding, compress):
    plain = httpx.post(
        f"{server.url}/v1/embeddings", content=BODY, headers={"content-type": "application/json"}
    )
    packed = httpx.post(
        f"{server.url}/v1/embeddings",
        content=compress(BODY),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert packed.status_code == 200, packed.text
    assert packed.json() == plain.json()


def test_a_gzip_bomb_is_refused_after_the_body_limit(serve):
    live = serve(max_body_bytes=100_000)
    bomb = gzip.compress(b'{"input": "' + b"a" * 50_000_000 + b'"}')  # 50 MB in ~50 KB
    assert len(bomb) < 100_000
    reply = httpx.post(
        f"{live.url}/v1/embeddings",
        content=bomb,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert reply.status_code == 413 and "decompressed request body" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("encoding", "body", "status", "words"),
    [
        ("br", BODY, 415, "not supported"),
        ("gzip, br", BODY, 415, "not supported"),
        ("gzip", gzip.compress(BODY)[:-8], 400, "truncated"),
        ("gzip", BODY, 400, "not valid"),
        ("gzip", gzip.compress(BODY) + b"more", 400, "follows the end"),
    ],
)
def test_bad_content_encodings(server, encoding, body, status, words):
    reply = httpx.post(
        f"{server.url}/v1/embeddings",
        content=body,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert reply.status_code == status and words in reply.json()["error"]["message"], reply.text


@pytest.mark.parametrize("body", [b'{"input": ', b"", b'{"input": "\xff"}', b"{'input': 'x'}"])
def test_a_body_that_is_not_json_is_400_whatever_the_flaw(server, body):
    reply = httpx.post(
        f"{server.url}/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "invalid_json"


def test_a_body_not_sent_as_json_is_415(server):
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
        reply = httpx.post(
            f"{server.url}/v1/embeddings", content=b'{"input": "x"}', headers=headers
        )
        assert reply.status_code == 415 and "application/json" in reply.json()["detail"], reply.text


@pytest.mark.parametrize("dimensions", [0, 33, 4096, 10**9])
def test_out_of_range_dimensions_are_422_whatever_the_value(server, dimensions):
    reply = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "dimensions": dimensions})
    assert reply.status_code == 422 and "dimensions" in reply.json()["error"]["message"], reply.text
    assert reply.json()["error"]["param"] == "dimensions"
    assert reply.json()["error"]["code"] == "invalid_option"  # the model's check, for any value


def test_every_error_speaks_both_dialects(server):
    replies = [
        httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "model": "nope"}),
        httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "truncate": "yes"}),
        httpx.post(f"{server.url}/v1/embeddings", json={"input": [{"image": "AAAA"}]}),
        httpx.get(f"{server.url}/v2/nothing"),
        httpx.get(f"{server.url}/v1/embeddings"),
    ]
    assert [r.status_code for r in replies] == [404, 422, 400, 404, 405]
    for reply in replies:
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["type"] == "invalid_request_error" and reply.json()["detail"]
    assert replies[2].json()["error"]["param"] == "input.0"


def test_trailing_slashes_are_served_not_redirected(server):
    reply = httpx.post(f"{server.url}/v1/embeddings/", json={"input": "x"})
    assert reply.status_code == 200 and reply.json()["model"] == "fake-model"
    assert httpx.get(f"{server.url}/v1/models/").status_code == 200
    assert server.metric("uniembed_requests_total", path="/v1/embeddings", status="200") >= 1


def test_models_are_listed_with_a_name_per_task_and_retrievable(server):
    listed = httpx.get(f"{server.url}/v1/models").json()["data"]
    ids = [card["id"] for card in listed]
    assert ids == [
        "fake-model",
        "fake-model-retrieval-query",
        "fake-model-retrieval-passage",
        "fake-model-text-matching",
        "fake-model-code-query",
        "fake-model-code-passage",
    ]
    card = httpx.get(f"{server.url}/v1/models/fake-model-code-passage").json()
    assert (card["task"], card["default_task"], card["root"]) == (
        "code.passage",
        "code.passage",
        "fake-model",
    )
    base = httpx.get(f"{server.url}/v1/models/fake-model").json()
    assert base["task"] is None and base["default_task"] == "retrieval.query"
    missing = httpx.get(f"{server.url}/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_a_client_that_leaves_while_uploading_is_counted_as_499(server):
    before = server.metric("uniembed_requests_total", path="/v1/embeddings", status="499")
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while server.metric("uniembed_requests_total", path="/v1/embeddings", status="499") == before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.metric("uniembed_requests_total", path="/v1/embeddings", status="500") == 0
