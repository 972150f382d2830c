"""The real ``uniembed serve`` process under hostile requests: budgets refuse before the work they
bound, idle connections are closed while /health answers, and a client that leaves stops costing
CPU."""

from __future__ import annotations

import base64
import io
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image

from uniembed.testing.live import ServeProcess
from uniembed.testing.pdfs import blank_pdf

MB = 1024  # KiB
HEADER_TIMEOUT = 2.0


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
    )
    yield process
    process.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_measured(served: ServeProcess, body: dict) -> tuple[httpx.Response, float, int]:
    """The response, its wall time and the server's peak RSS growth during it (KiB)."""
    payload = orjson.dumps(body)
    served.reset_peak_memory()
    before = served.status_kib("VmRSS")
    started = time.perf_counter()
    response = httpx.post(
        f"{served.url}/v1/embeddings",
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
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (200, 30, 30)).save(buffer, "PNG")  # 49 M pixels: 147 MB decoded
    image = b64(buffer.getvalue())
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
