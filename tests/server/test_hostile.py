"""The real ``uniembed serve`` process under hostile requests: budgets refuse before the work they
bound, idle connections are closed while /health answers, and a client that leaves stops costing
CPU."""

from __future__ import annotations

import base64
import io
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from tests.helpers import png_bytes
from uniembed.testing.live import ServeProcess
from uniembed.testing.pdfs import blank_pdf

MB = 1024  # KiB
HEADER_TIMEOUT = 2.0
MAX_CONCURRENT = 8


@pytest.fixture(scope="module")
def served(tiny_v4_path: Path) -> Iterator[ServeProcess]:
    # batches of at most 2 rows: a forward already running when a client leaves is short
    process = ServeProcess(
        "--model",
        str(tiny_v4_path),
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--max-batch-size",
        "2",
        "--max-concurrent-requests",
        str(MAX_CONCURRENT),
    )
    yield process
    process.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_measured(
    served: ServeProcess, body: dict, path: str = "/v1/embeddings"
) -> tuple[httpx.Response, float, int]:
    """The response, its wall time and the server's peak RSS growth during it (KiB)."""
    payload = orjson.dumps(body)
    served.reset_peak_memory()
    before = served.status_kib("VmRSS")
    started = time.perf_counter()
    response = httpx.post(
        f"{served.url}{path}",
        content=payload,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    seconds = time.perf_counter() - started
    return response, seconds, served.status_kib("VmHWM") - before


def test_41_pdfs_of_50_large_blank_pages_are_refused_from_their_page_counts(served):
    """The request that killed the server at 24 GB: 289 KB of PDFs, 2,050 pages of 1000 × 1000
    pt."""
    pdf = b64(blank_pdf(50, 1000, 1000))
    response, seconds, growth = post_measured(served, {"input": [{"pdf": pdf} for _ in range(41)]})
    assert response.status_code == 413, response.text
    assert "max_items_per_request" in response.text or "max_pixels_per_request" in response.text
    assert seconds < 1.0 and growth < 200 * MB, (seconds, growth)


def test_pages_over_the_pixel_budget_are_refused_before_rendering(served):
    pdf = b64(
        blank_pdf(50, 1000, 1000)
    )  # 2084 x 2084 pixels a page at 150 dpi: 434 M pixels in all
    response, seconds, growth = post_measured(served, {"input": [{"pdf": pdf}, {"pdf": pdf}]})
    assert response.status_code == 413 and "max_pixels_per_request" in response.text, response.text
    assert response.json()["error"]["code"] == "input_too_large"
    assert seconds < 1.0 and growth < 100 * MB, (seconds, growth)


def test_large_images_over_the_pixel_budget_are_refused_before_decoding(served):
    image = b64(png_bytes((200, 30, 30), (7000, 7000)))  # 49 M pixels: 147 MB decoded
    response, seconds, growth = post_measured(served, {"input": [{"image": image}] * 10})
    assert response.status_code == 413 and "max_pixels_per_request" in response.text, response.text
    assert seconds < 1.0 and growth < 100 * MB, (seconds, growth)  # not one of them was decoded


def test_a_client_that_leaves_stops_the_decoding_and_rendering_of_its_request(served):
    pdf = b64(blank_pdf(10, 612, 792))  # letter pages, 1275 x 1650 pixels each at 150 dpi
    body = orjson.dumps({"input": [{"pdf": pdf}, {"pdf": pdf}], "task": "retrieval.passage"})
    started_cpu = served.cpu_seconds()
    full = httpx.post(
        f"{served.url}/v1/embeddings",
        content=body,
        headers={"content-type": "application/json"},
        timeout=120,
    )
    assert full.status_code == 200 and len(full.json()["data"]) == 20
    full_cpu = served.cpu_seconds() - started_cpu
    sent = served.cpu_seconds()
    with socket.create_connection(("127.0.0.1", served.port)) as raw:
        raw.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(full_cpu * 0.2)  # into the work (the wall time of the full request is longer)
    left = served.cpu_seconds()
    assert left - sent > 0.1  # the work had started
    time.sleep(max(2.0, full_cpu))
    after_leaving = served.cpu_seconds() - left
    assert after_leaving < 0.25 * full_cpu, (after_leaving, full_cpu)
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'uniembed_requests_total{path="/v1/embeddings",status="499"} 1.0' in metrics


def test_idle_connections_are_closed_by_the_header_timeout_while_health_answers(served):
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 200, hard), hard))
    sockets = [
        socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(count)
    ]
    try:
        for half_sent in sockets[
            ::2
        ]:  # every other one starts a request and never finishes its headers
            half_sent.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\n")
        opened = time.monotonic()
        health_times = []
        while time.monotonic() - opened < HEADER_TIMEOUT + 1:
            started = time.perf_counter()
            assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
            health_times.append(time.perf_counter() - started)
            time.sleep(0.2)
        closed = _closed_by_server(sockets, deadline=opened + HEADER_TIMEOUT + 5)
        assert closed == count
        assert max(health_times) < 1.0, health_times
    finally:
        for sock in sockets:
            sock.close()
    metrics = httpx.get(f"{served.url}/metrics").text
    assert _sample(metrics, 'uniembed_connections_closed_total{reason="header_timeout"}') >= count


def _closed_by_server(sockets: list[socket.socket], deadline: float) -> int:
    """How many of ``sockets`` the server has closed (EOF or reset) by ``deadline``."""
    closed = 0
    for sock in sockets:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            eof = sock.recv(1) == b""
        except ConnectionResetError:
            eof = True
        except TimeoutError:
            eof = False
        closed += eof
    return closed


def _sample(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(name))
    return float(line.rsplit(" ", 1)[1])


# ----------------------------------------------------------------- slow bodies hold no slot
SLOW_BODY = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b'Content-Length: 1000\r\n\r\n{"input": ['
)


def test_slow_bodies_beyond_the_concurrency_limit_leave_embeddings_answering(served):
    slow = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(3 * MAX_CONCURRENT)]
    try:
        for sock in slow:
            sock.sendall(SLOW_BODY)  # headers and a few body bytes; the rest never comes
        time.sleep(0.5)
        for _ in range(3):
            response = httpx.post(f"{served.url}/v1/embeddings", json={"input": "ok"}, timeout=10)
            assert response.status_code == 200, response.text
    finally:
        for sock in slow:
            sock.close()


# ----------------------------------------------------------------- what decoding really costs
def gradient_png16(side: int = 7000) -> bytes:
    """A 16-bit grey PNG of ``side``² pixels, ~110 KB (a horizontal gradient)."""
    row = (np.arange(side, dtype=np.uint32) * 65535 // side).astype(np.uint16)
    return png_bytes(Image.fromarray(np.tile(row, (side, 1))))


def float_tiff(side: int = 7000) -> bytes:
    """A float32 TIFF of ``side``² pixels (deflate; a few grey bands)."""
    values = np.full((side, side), 0.25, dtype=np.float32)
    values[:, side // 2 :] = 0.75
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, "TIFF", compression="tiff_deflate")
    return buffer.getvalue()


@pytest.mark.parametrize("encode", [gradient_png16, float_tiff])
def test_a_high_depth_image_costs_no_more_than_the_budget_charges(served, encode):
    """A 7000² 16-bit PNG cost +1.24 GiB (a float64 copy of it); its request now stays under the
    request budget of 1 GiB (max_pixels_per_request × 4 bytes), model and response included."""
    data = encode()
    assert len(data) < 20 * 1024 * 1024
    response, _, growth = post_measured(served, {"input": [{"image": b64(data)}]})
    assert response.status_code == 200, response.text
    assert growth < 1024 * MB, growth


def test_high_depth_images_over_the_budget_are_refused_before_decoding(served):
    """5 × 16-bit 7000² PNGs (110 KB each) are 245 M pixels, under 256 Mi pixels, but decoding and
    resizing them needs more than the 1 GiB budget: refused from their headers."""
    image = b64(gradient_png16())
    response, seconds, growth = post_measured(served, {"input": [{"image": image}] * 5})
    assert response.status_code == 413 and "max_pixels_per_request" in response.text, response.text
    assert seconds < 1.0 and growth < 100 * MB, (seconds, growth)


# ----------------------------------------------------------------- tokens before tokenising
def test_a_request_far_over_the_token_budget_is_refused_before_tokenising(served):
    """2,048 texts of 24k characters (~33 M tokens of the tiny tokenizer; tokenising them took
    71-92 s): the refusal costs little more than reading the body does, and another client is
    answered meanwhile."""
    text = ("Photovoltaic cells turn sunlight into electricity. " * 500)[:24_000]
    refused_body = {"input": [text] * 2048}
    baseline, baseline_seconds, _ = post_measured(served, {**refused_body, "task": 7})
    assert baseline.status_code == 422  # the same body, refused by the schema: reading it
    response, seconds, _ = min(
        (post_measured(served, refused_body) for _ in range(2)), key=lambda measured: measured[1]
    )
    assert response.status_code == 413 and "max_tokens_per_request" in response.text, response.text
    assert seconds - baseline_seconds < 0.5, (seconds, baseline_seconds)
    latencies: list[float] = []

    def other_client() -> None:
        for _ in range(5):
            started = time.perf_counter()
            assert (
                httpx.post(f"{served.url}/v1/embeddings", json={"input": "hi"}).status_code == 200
            )
            latencies.append(time.perf_counter() - started)

    other = threading.Thread(target=other_client)
    other.start()
    assert post_measured(served, refused_body)[0].status_code == 413
    other.join(30)
    assert len(latencies) == 5 and max(latencies) < 1.0, latencies


# ----------------------------------------------------------------- bounded error bodies
def test_error_bodies_do_not_echo_unbounded_field_names(served):
    huge_name = orjson.dumps({"input": "x", "k" * 20_000_000: 1})
    many_names = orjson.dumps({"input": "x", **{f"field{i}": i for i in range(200_000)}})
    for body in (huge_name, many_names):
        response = httpx.post(
            f"{served.url}/v1/embeddings",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 422 and len(response.content) < 10_000, len(response.content)
    assert "and 199990 more" in response.json()["error"]["message"]


# ----------------------------------------------------------------- memory goes back
def test_memory_goes_back_to_the_system_after_a_large_request(served):
    """The process kept its high-water mark (2.65 GB after a run that peaked at 5.3 GB)."""

    def pages(count: int) -> dict:  # A4 pages, 1240 x 1755 pixels each at 150 dpi
        return {"input": [{"pdf": b64(blank_pdf(count, 595, 842))}], "task": "retrieval.passage"}

    assert post_measured(served, pages(1))[0].status_code == 200  # warm: every code path loaded
    time.sleep(1.5)
    before = served.status_kib("VmRSS")
    response, _, growth = post_measured(served, pages(10))
    assert response.status_code == 200 and growth > 150 * MB, growth  # it did cost memory
    time.sleep(1.5)  # the trim runs after the response, at most once a second
    after = served.status_kib("VmRSS")
    assert after - before < 0.25 * growth, (before, after, growth)


# ----------------------------------------------------------------- the index routes
@pytest.fixture(scope="module")
def served_index(tiny_v4_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from uniembed.retrieval.index import Index

    location = tmp_path_factory.mktemp("hostile-index") / "index"
    Index.create(location, tiny_v4_path).close()
    process = ServeProcess("--index", str(location))
    yield process
    process.stop()


def test_an_over_budget_add_is_refused_before_any_page_is_rendered(served_index):
    """4 × 40 A4 pages: the add route rendered 120 pages (+828 MiB) before its 413."""
    pdf = b64(blank_pdf(40, 595, 842))
    body = {"documents": [{"pdf": pdf} for _ in range(4)]}
    response, seconds, growth = post_measured(served_index, body, "/v1/index/documents")
    assert response.status_code == 413 and "max_pixels_per_request" in response.text, response.text
    assert response.json()["error"]["message"].startswith("document ")  # the one over the budget
    assert seconds < 1.0 and growth < 100 * MB, (seconds, growth)
    count = httpx.get(f"{served_index.url}/v1/index").json()
    assert count["entries"] == 0, count


def test_an_add_refuses_high_depth_images_before_decoding(served_index):
    image = b64(gradient_png16())
    body = {"documents": [{"image": image} for _ in range(5)]}
    response, seconds, growth = post_measured(served_index, body, "/v1/index/documents")
    assert response.status_code == 413, response.text
    assert seconds < 1.0 and growth < 100 * MB, (seconds, growth)
