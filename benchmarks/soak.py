"""Soak test: mixed hostile and ordinary traffic against a real ``uniembed serve --index`` for a
given time, reporting memory, 5xx answers and ``/health`` availability.

The script writes the tiny random jina-embeddings-v4 checkpoint (or takes ``--model``), creates an
empty index with it, starts ``uniembed serve --index`` on 127.0.0.1 and a free port, and runs
``--clients`` client threads until ``--minutes`` have passed. Each client picks, round after round:
texts, an image (RGB, 16-bit or transparent), a PDF, a search (by text or image), an add (text or
PDF, ids from a fixed pool so the index stays bounded), a delete, or a slow client (headers and a
few body bytes, then silence until it gives up). One more thread asks ``/health`` twice a second.
Every loop is bounded by the deadline; nothing but 127.0.0.1 is contacted.

Printed at the end (and written as JSON with ``--json``): RSS after ``--baseline-minutes`` (5 for
the 30-minute soak) and at the end with their ratio, the peak RSS, answers by kind and status, the
number of 5xx answers, failed ``/health`` probes and transport errors. A benchmark, not a test.

    python benchmarks/soak.py --minutes 30                         # the soak of issue 16
    python benchmarks/soak.py --minutes 3 --baseline-minutes 1     # a short run to try it
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

MiB = 1024 * 1024
ID_POOL = 40  # ids the adds and deletes draw from: the index holds at most this many documents
SLOW_CLIENT_SECONDS = 3.0  # how long a slow client trickles before it gives up
HEALTH_INTERVAL = 0.5


# ----------------------------------------------------------------- inputs
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return b64(buffer.getvalue())


def make_inputs(seed: int = 0) -> dict[str, Any]:
    """The payloads the clients send, built once (the same on every run)."""
    from uniembed.testing.pdfs import blank_pdf

    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    depth = np.tile((np.arange(2000, dtype=np.uint32) * 30).astype(np.uint16), (1500, 1))
    words = [
        "solar",
        "wind",
        "tide",
        "jazz",
        "tax",
        "sourdough",
        "rust",
        "lifetimes",
        "chords",
        "panels",
        "forms",
    ]
    return {
        "texts": [" ".join(rng.choice(words, 40)) for _ in range(64)],
        "long_text": " ".join(rng.choice(words, 6000)),
        "photo": encoded(photo, "JPEG"),
        "deep": encoded(Image.fromarray(depth)),  # 16-bit, 3 M pixels
        "clear": encoded(Image.new("RGBA", (800, 600), (10, 200, 30, 90))),
        "pdf": b64(blank_pdf(4, 595, 842)),
    }


# ----------------------------------------------------------------- traffic
class Tally:
    """Answers by (kind, status), transport errors, and the /health record; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.health_ok = 0
        self.health_failed = 0

    def answer(self, kind: str, status: int) -> None:
        with self.lock:
            self.answers[(kind, status)] += 1

    def error(self, kind: str, exc: Exception) -> None:
        with self.lock:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.answers.items() if status >= 500)


def requests(inputs: dict[str, Any], rng: random.Random) -> list[tuple[str, Callable[..., Any]]]:
    """(kind, send) pairs; ``send(http)`` makes one request and returns its response."""

    def embed(body: dict[str, Any]) -> Callable[[httpx.Client], httpx.Response]:
        return lambda http: http.post("/v1/embeddings", json=body)

    def add(http: httpx.Client) -> httpx.Response:
        doc_id = f"doc-{rng.randrange(ID_POOL)}"
        document = (
            {"id": doc_id, "pdf": inputs["pdf"]}
            if rng.random() < 0.3
            else {"id": doc_id, "text": rng.choice(inputs["texts"]), "metadata": {"n": 1}}
        )
        return http.post("/v1/index/documents", json={"documents": [document]})

    def delete(http: httpx.Client) -> httpx.Response:
        return http.delete(f"/v1/index/documents/doc-{rng.randrange(ID_POOL)}")

    def search(body: dict[str, Any]) -> Callable[[httpx.Client], httpx.Response]:
        return lambda http: http.post("/v1/search", json=body)

    return [
        ("texts", embed({"input": rng.sample(inputs["texts"], 16)})),
        ("long_text", embed({"input": [inputs["long_text"]], "truncate": True})),
        ("image", embed({"input": [{"image": inputs["photo"]}]})),
        ("deep_image", embed({"input": [{"image": inputs["deep"]}, {"image": inputs["clear"]}]})),
        ("pdf", embed({"input": [{"pdf": inputs["pdf"]}], "task": "retrieval.passage"})),
        ("search_text", search({"query": "solar tide", "k": 5})),
        ("search_image", search({"query": {"image": inputs["photo"]}, "k": 3})),
        ("add", add),
        ("delete", delete),
    ]


def slow_client(port: int, deadline: float) -> None:
    """Headers and a few body bytes, then a byte a second until it gives up or is closed."""
    head = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"input": ['
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        until = min(time.monotonic() + SLOW_CLIENT_SECONDS, deadline)
        while time.monotonic() < until:
            time.sleep(1.0)
            try:
                sock.sendall(b'"')
            except OSError:
                return  # closed by the server (evicted or timed out): what it may do


def client(url: str, port: int, inputs: dict, tally: Tally, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    kinds = requests(inputs, rng)
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            if rng.random() < 0.1:
                try:
                    slow_client(port, deadline)
                    tally.answer("slow_client", 0)
                except OSError as exc:
                    tally.error("slow_client", exc)
                continue
            kind, send = rng.choice(kinds)
            try:
                tally.answer(kind, send(http).status_code)
            except httpx.HTTPError as exc:
                tally.error(kind, exc)


def health(url: str, tally: Tally, deadline: float) -> None:
    with httpx.Client(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                ok = http.get("/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            with tally.lock:
                tally.health_ok += ok
                tally.health_failed += not ok
            time.sleep(HEALTH_INTERVAL)


# ----------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    from uniembed.retrieval.index import Index
    from uniembed.testing.jina_v4 import write_tiny_jina_v4
    from uniembed.testing.live import ServeProcess

    with tempfile.TemporaryDirectory(prefix="uniembed-soak-") as folder:
        model = args.model or write_tiny_jina_v4(Path(folder) / "tiny-jina-v4", seed=0)
        Index.create(Path(folder) / "index", model).close()
        served = ServeProcess("--index", str(Path(folder) / "index"), *args.serve_args)
        try:
            return soak(served, args)
        finally:
            served.stop()


def soak(served: Any, args: argparse.Namespace) -> dict[str, Any]:
    inputs = make_inputs()
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    threads = [
        threading.Thread(
            target=client, args=(served.url, served.port, inputs, tally, deadline, seed)
        )
        for seed in range(args.clients)
    ]
    threads.append(threading.Thread(target=health, args=(served.url, tally, deadline)))
    start_rss = served.status_kib("VmRSS") / 1024
    for thread in threads:
        thread.start()
    baseline_at = started + min(args.baseline_minutes, args.minutes) * 60
    time.sleep(max(baseline_at - time.monotonic(), 0))
    baseline_rss = served.status_kib("VmRSS") / 1024
    for thread in threads:
        thread.join()
    time.sleep(2.0)  # the last trim runs after the last answer
    end_rss = served.status_kib("VmRSS") / 1024
    return {
        "minutes": args.minutes,
        "clients": args.clients,
        "rss_mib": {
            "start": round(start_rss),
            f"after_{args.baseline_minutes:g}_min": round(baseline_rss),
            "end": round(end_rss),
            "peak": round(served.status_kib("VmHWM") / 1024),
            "end_over_baseline": round(end_rss / baseline_rss, 3),
        },
        "server_errors_5xx": tally.server_errors,
        "health": {"ok": tally.health_ok, "failed": tally.health_failed},
        "transport_errors": dict(tally.errors),
        "answers": {f"{kind} {status}": n for (kind, status), n in sorted(tally.answers.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--baseline-minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--model", help="a checkpoint (default: the tiny random v4)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "serve_args", nargs="*", help="more `uniembed serve` flags (after --), e.g. --device cpu"
    )
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.clients <= 64:
        parser.error("--minutes must be in (0, 1440] and --clients in [1, 64]")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
