"""Load test: the HTTP server's throughput and latency next to the library's own, in one run.

The script measures ``Embedder.encode`` in this process on short texts, then starts the server
(uvicorn in a subprocess, on 127.0.0.1 and a free port) with the same model and sends the same texts
at concurrency 1, 8 and 64 with asyncio + httpx (one connection per simulated client). It prints one
table: items/s, p50/p99 latency, failed requests, the ratio server/library and the load generator's
own CPU use (it shares the machine with the server). Request counts and time per level are bounded;
nothing but 127.0.0.1 is contacted. A benchmark, not a test: nothing is asserted about timings.

    python benchmarks/loadtest.py --fake                       # FakeModel: measures server overhead
    python benchmarks/loadtest.py --tiny --requests 200        # tiny random jina-embeddings-v4
    python benchmarks/loadtest.py --mid --concurrency 1,8      # mid-size random v4 (CPU minutes)
    python benchmarks/loadtest.py --model /models/jina-embeddings-v4 --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    from uniembed.embedder import Embedder

HOST = "127.0.0.1"
TOPICS = ("solar panels", "tax forms", "rust lifetimes", "sourdough", "tide tables", "jazz chords")


# ----------------------------------------------------------------- inputs and model
def short_texts(count: int) -> list[str]:
    """``count`` distinct short texts (6–10 words), the same on every run.

    >>> short_texts(2)  # doctest: +NORMALIZE_WHITESPACE
    ['question 0: how do solar panels work in practice',
     'question 1: how do tax forms work in practice']
    """
    return [
        f"question {i}: how do {TOPICS[i % len(TOPICS)]} work in practice" for i in range(count)
    ]


def build_embedder(args: argparse.Namespace) -> Embedder:
    """The model named by the arguments: FakeModel, or a snapshot loaded with ``uniembed.load``."""
    from uniembed import load
    from uniembed.embedder import Embedder
    from uniembed.engine.planning import BatchPolicy
    from uniembed.testing.fake import FakeModel

    if args.fake:
        return Embedder(FakeModel(), BatchPolicy(args.token_budget, args.max_batch_size))
    return load(
        args.model,
        device=args.device,
        dtype=args.dtype,
        token_budget=args.token_budget,
        max_batch_size=args.max_batch_size,
    )


def write_random_v4(size_name: str, folder: Path) -> Path:
    """A random jina-embeddings-v4 snapshot of the ``tiny`` or ``mid`` size in ``folder``."""
    from uniembed.testing import jina_v4

    size = jina_v4.MID if size_name == "mid" else None
    return jina_v4.write_tiny_jina_v4(folder / f"random-v4-{size_name}", seed=0, size=size)


# ----------------------------------------------------------------- measurements
@dataclass
class Level:
    """One row of the result table."""

    mode: str
    concurrency: int
    requests: int
    items: int
    failed: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    client_cpu_s: float | None = None  # CPU time the load generator itself used (server levels)
    batches: int | None = None  # forward batches the server ran during the level (from /metrics)
    forward_s: float | None = (
        None  # time the server's batch worker spent in forward (from /metrics)
    )
    server_cpu_s: float | None = (
        None  # CPU time of the server process during the level (Linux /proc)
    )
    ratios: list[float] = field(
        default_factory=list
    )  # items/s over the library's one call, per round
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_batch(self) -> float | None:
        return self.items / self.batches if self.batches else None


def measure_library_one_call(embedder: Embedder, texts: list[str], task: str | None) -> Level:
    """Library throughput in its best case: every text in one ``encode`` call."""
    started = time.perf_counter()
    embedder.encode(texts, task)
    return Level("library, one call", 1, 1, len(texts), 0, time.perf_counter() - started)


def measure_library_per_request(
    embedder: Embedder, texts: list[str], per_request: int, task: str | None
) -> Level:
    """Library throughput and latency with one ``encode`` call per request-sized group."""
    groups = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    latencies = []
    started = time.perf_counter()
    for group in groups:
        begun = time.perf_counter()
        embedder.encode(group, task)
        latencies.append(time.perf_counter() - begun)
    level = Level(
        "library, per request", 1, len(groups), len(texts), 0, time.perf_counter() - started
    )
    level.p50_ms, level.p99_ms = percentiles_ms(latencies)
    return level


def combine(rounds: list[Level]) -> Level:
    """One level from the same measurement repeated: totals, pooled latencies, every round's
    ratio."""
    first = rounds[0]
    level = Level(
        first.mode,
        first.concurrency,
        sum(r.requests for r in rounds),
        sum(r.items for r in rounds),
        sum(r.failed for r in rounds),
        sum(r.seconds for r in rounds),
    )
    if first.client_cpu_s is not None:
        level.client_cpu_s = sum(r.client_cpu_s or 0.0 for r in rounds)
    if first.server_cpu_s is not None:
        level.server_cpu_s = sum(r.server_cpu_s or 0.0 for r in rounds)
    if first.batches is not None:
        level.batches = sum(r.batches or 0 for r in rounds)
        level.forward_s = sum(r.forward_s or 0.0 for r in rounds)
    level.ratios = [ratio for r in rounds for ratio in r.ratios]
    level.latencies = [latency for r in rounds for latency in r.latencies]
    if level.latencies:
        level.p50_ms, level.p99_ms = percentiles_ms(level.latencies)
    elif len(rounds) == 1:
        level.p50_ms, level.p99_ms = first.p50_ms, first.p99_ms
    return level


def percentiles_ms(latencies: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in milliseconds, nearest-rank; (None, None) without data.

    >>> percentiles_ms([0.001 * i for i in range(1, 101)])
    (50.0, 99.0)
    """
    if not latencies:
        return None, None
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
        return round(ordered[index] * 1000, 3)

    return rank(0.50), rank(0.99)


async def measure_server(
    url: str,
    model: str,
    texts: list[str],
    per_request: int,
    concurrency: int,
    time_limit: float,
    task: str | None,
    timeout: float,
    client_kind: str = "raw",
) -> Level:
    """Send ``texts`` in requests of ``per_request`` items from ``concurrency`` workers; stop early
    (and count only finished requests) when ``time_limit`` seconds have passed."""
    bodies = [
        _body(model, texts[i : i + per_request], task) for i in range(0, len(texts), per_request)
    ]
    latencies: list[float] = []
    failures = 0
    done_items = 0
    next_index = 0
    deadline = time.perf_counter() + time_limit

    async def worker(client: Client) -> None:
        nonlocal next_index, failures, done_items
        while next_index < len(bodies) and time.perf_counter() < deadline:
            body, count = bodies[next_index]
            next_index += 1
            begun = time.perf_counter()
            ok = await client.embed(body, count)
            latencies.append(time.perf_counter() - begun)
            if ok:
                done_items += count
            else:
                failures += 1

    # One client (one keep-alive connection) per worker, like independent users.
    clients = [make_client(client_kind, url, timeout) for _ in range(concurrency)]
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(client) for client in clients))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    level = Level(
        "server",
        concurrency,
        len(latencies),
        done_items,
        failures,
        seconds,
        client_cpu_s=cpu_seconds,
        latencies=latencies,
    )
    level.p50_ms, level.p99_ms = percentiles_ms(latencies)
    return level


def _body(model: str, texts: list[str], task: str | None) -> tuple[bytes, int]:
    """The JSON request body for ``texts`` and the number of embeddings it must return."""
    body: dict[str, Any] = {"model": model, "input": texts}
    if task is not None:
        body["task"] = task
    return json.dumps(body).encode("utf-8"), len(texts)


def answered(status: int, payload: bytes, count: int) -> bool:
    """Whether a response is a 200 with ``count`` embeddings (the load test's success check).

    >>> answered(200, b'{"data": [{"embedding": [0.5]}]}', 1), answered(200, b'{"data": []}', 1)
    (True, False)
    >>> answered(429, b'{"detail": "queue full"}', 1)
    False
    """
    if status != 200:
        return False
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and len(document.get("data", [])) == count


# ----------------------------------------------------------------- clients
class Client(Protocol):
    async def embed(self, body: bytes, count: int) -> bool: ...
    async def close(self) -> None: ...


def make_client(kind: str, url: str, timeout: float) -> Client:
    """``raw``: a lean HTTP/1.1 client on asyncio streams; ``httpx``: httpx.AsyncClient."""
    return RawClient(url, timeout) if kind == "raw" else HttpxClient(url, timeout)


class RawClient:
    """A minimal HTTP/1.1 client (one keep-alive connection, Content-Length or chunked bodies).

    The load generator shares the CPU with the server; httpx costs ~1 ms of CPU per request here,
    this client ~0.1 ms, so the server's numbers are less distorted by the tool measuring them.
    """

    def __init__(self, url: str, timeout: float) -> None:
        parsed = urlsplit(url)
        self.host, self.port = parsed.hostname or HOST, parsed.port or 80
        self.timeout = timeout
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def embed(self, body: bytes, count: int) -> bool:
        try:
            status, payload = await asyncio.wait_for(
                self._post("/v1/embeddings", body), self.timeout
            )
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            return False
        return answered(status, payload, count)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode("ascii") + body)
        await writer.drain()
        status, headers = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            payload = await _read_chunked(reader)
        else:
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    r"""Status and lower-cased headers of an HTTP/1.1 response head.

    >>> parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    (200, {'content-length': '2'})
    """
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class HttpxClient:
    """httpx.AsyncClient with one connection; plain HTTP to 127.0.0.1, so no CA bundle
    (``verify=False``).

    One client per simulated user: a single shared client is much slower here, because httpcore
    scans every pooled connection (a socket poll each) for every request.
    """

    def __init__(self, url: str, timeout: float) -> None:
        import httpx

        self.url = url
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=timeout,
            verify=False,
        )

    async def embed(self, body: bytes, count: int) -> bool:
        import httpx

        try:
            response = await self.client.post(
                f"{self.url}/v1/embeddings",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError:
            return False
        return answered(response.status_code, response.content, count)

    async def close(self) -> None:
        await self.client.aclose()


def scrape_forward_totals(url: str) -> tuple[int, float]:
    """(forward batches, seconds in forward) summed over models, from the server's ``/metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals = {
        "uniembed_forward_duration_seconds_count": 0.0,
        "uniembed_forward_duration_seconds_sum": 0.0,
    }
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10.0).text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return int(totals["uniembed_forward_duration_seconds_count"]), totals[
        "uniembed_forward_duration_seconds_sum"
    ]


# ----------------------------------------------------------------- the server process
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def serve(args: argparse.Namespace) -> None:
    """Child process: run the server for the model named by ``args`` on ``args.serve_port``."""
    import uvicorn

    from uniembed.engine.threads import call_on_temporary_thread
    from uniembed.server.app import create_app
    from uniembed.server.connections import uvicorn_config
    from uniembed.server.settings import ServerSettings

    embedder = call_on_temporary_thread(build_embedder, args)  # as `uniembed serve` loads
    name = served_name(args, embedder)
    settings = ServerSettings(
        models=(name,),
        host=HOST,
        port=args.serve_port,
        device=args.device,
        dtype=args.dtype,
        token_budget=args.token_budget,
        max_batch_size=args.max_batch_size,
        batch_gather_ms=args.batch_gather_ms,
        log_level="warning",
    )
    app = create_app(settings, {name: embedder})
    if args.http == "auto":  # what `uniembed serve` runs: uvicorn with the connection guard
        uvicorn.Server(uvicorn_config(app, settings)).run()
    else:  # one parser, without the guard (to compare parsers)
        uvicorn.run(app, host=HOST, port=args.serve_port, log_level="warning", http=args.http)


def served_name(args: argparse.Namespace, embedder: Embedder) -> str:
    return embedder.info.name if args.fake else Path(args.model).name


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start :func:`serve` in a subprocess with the same model arguments."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *model_arguments(args),
        "--serve-port",
        str(port),
    ]
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def model_arguments(args: argparse.Namespace) -> list[str]:
    result = ["--fake"] if args.fake else ["--model", str(args.model)]
    for flag, value in (("--device", args.device), ("--dtype", args.dtype)):
        if value is not None:
            result += [flag, value]
    return result + [
        "--token-budget",
        str(args.token_budget),
        "--max-batch-size",
        str(args.max_batch_size),
        "--batch-gather-ms",
        str(args.batch_gather_ms),
        "--http",
        args.http,
    ]


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``/ready`` until it answers 200; fail with the server's log when it dies or times
    out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server we started (only that process), then kill it if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ----------------------------------------------------------------- report
def print_table(levels: list[Level], baseline: Level, client: str) -> None:
    """One line per measurement, with throughput relative to the library's best case."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"uniembed load test ({baseline.items} short texts per level, {client} client)"
    )
    columns = (
        "mode",
        "concurrency",
        "requests",
        "failed",
        "items/s",
        "p50 ms",
        "p99 ms",
        "server/library",
        "client CPU",
        "rows/batch",
        "in forward",
        "server CPU ms/req",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for level in levels:
        table.add_row(
            level.mode,
            str(level.concurrency),
            str(level.requests),
            str(level.failed),
            f"{level.items_per_s:.1f}",
            _one_decimal(level.p50_ms),
            _one_decimal(level.p99_ms),
            ratio_text(level, baseline),
            _share(level.client_cpu_s, level.seconds),
            _one_decimal(level.rows_per_batch),
            _share(level.forward_s, level.seconds),
            _per_request_ms(level),
        )
    Console(width=max(shutil.get_terminal_size().columns, 200)).print(table)


def ratio_text(level: Level, baseline: Level) -> str:
    """Throughput over the library's one call: the median of the rounds, with their range.

    >>> ratio_text(
    ...     Level("server", 64, 3, 3, 0, 1.0, ratios=[0.9, 0.8, 1.0]),
    ...     Level("library", 1, 1, 1, 0, 1.0),
    ... )
    '0.90 (0.80–1.00)'
    """
    if len(level.ratios) > 1:
        return (
            f"{statistics.median(level.ratios):.2f} "
            f"({min(level.ratios):.2f}–{max(level.ratios):.2f})"
        )
    if level.ratios:
        return f"{level.ratios[0]:.2f}"
    return f"{level.items_per_s / baseline.items_per_s:.2f}" if baseline.items_per_s else "-"


def _per_request_ms(level: Level) -> str:
    """Server CPU time per request in ms (all its threads: forward included); ``-`` for library
    rows."""
    if level.server_cpu_s is None or not level.requests:
        return "-"
    return f"{1000 * level.server_cpu_s / level.requests:.2f}"


def _share(cpu_seconds: float | None, seconds: float) -> str:
    """The load generator's CPU use as a share of one core, e.g. ``'35%'``; ``-`` for library
    rows."""
    return "-" if cpu_seconds is None or seconds <= 0 else f"{100 * cpu_seconds / seconds:.0f}%"


def _one_decimal(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ----------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="local snapshot (or hub id) of jina-embeddings-v4 or v3")
    model.add_argument(
        "--tiny", action="store_true", help="a tiny random v4 checkpoint written to a temp folder"
    )
    model.add_argument(
        "--mid", action="store_true", help="a mid-size random v4 checkpoint (real compute on CPU)"
    )
    model.add_argument(
        "--fake", action="store_true", help="FakeModel: measures the server's own overhead"
    )
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument(
        "--task", help="API task name sent with every request (default: the model's)"
    )
    parser.add_argument(
        "--requests", type=int, default=256, help="requests per concurrency level (max 10000)"
    )
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument(
        "--concurrency", default="1,8,64", help="comma-separated levels, each 1..256"
    )
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level, at most")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a lean HTTP/1.1 client on asyncio streams (default) or httpx",
    )
    parser.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP parser in the server (auto: what `uniembed serve` runs: httptools "
        "when installed, with the connection guard; h11/httptools: that parser alone)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="library and server measured in alternation this many times (1..20)",
    )
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--batch-gather-ms", type=float, default=10.0, help="the server's --batch-gather-ms"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--serve-port", type=int, help=argparse.SUPPRESS
    )  # internal: child server process
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if not 1 <= args.requests <= 10_000 or not all(1 <= c <= 256 for c in args.levels):
        parser.error("--requests must be 1..10000 and each concurrency 1..256")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    if not 1 <= args.items_per_request <= 2048:
        parser.error("--items-per-request must be 1..2048")
    return args


def run(args: argparse.Namespace) -> list[Level]:
    """Library and server measured in alternation, ``--rounds`` times, so that a machine whose speed
    drifts (shared CPUs) affects both alike; each server level's ratio is taken against the
    library's one-call throughput of the same round."""
    texts = short_texts(args.requests * args.items_per_request)
    embedder = build_embedder(args)
    name = served_name(args, embedder)
    print(f"library: {embedder.info.name} on {embedder.device}, {len(texts)} texts", flush=True)
    embedder.encode(texts[: min(len(texts), 16)], args.task)  # warm-up: lazy init, allocator
    per_request = measure_library_per_request(embedder, texts, args.items_per_request, args.task)
    one_call: list[Level] = []
    server: dict[int, list[Level]] = {c: [] for c in args.levels}
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="uniembed-loadtest-") as tmp:
        log = Path(tmp) / "server.log"
        process = start_server(args, port, log)
        try:
            wait_until_ready(url, process, log, args.startup_timeout)
            asyncio.run(
                measure_server(
                    url, name, texts[:8], 1, 1, 30.0, args.task, args.request_timeout, args.client
                )
            )  # warm-up
            for round_number in range(1, args.rounds + 1):
                print(
                    f"round {round_number}/{args.rounds}: library, server at {args.levels}",
                    flush=True,
                )
                library = measure_library_one_call(embedder, texts, args.task)
                one_call.append(library)
                for concurrency in args.levels:
                    level = measure_server_level(url, name, texts, concurrency, args, process.pid)
                    level.ratios = [level.items_per_s / library.items_per_s]
                    server[concurrency].append(level)
        finally:
            stop_server(process)
    baseline = combine(one_call)
    baseline.ratios = [1.0]
    return [baseline, per_request, *(combine(server[c]) for c in args.levels)]


def measure_server_level(
    url: str,
    name: str,
    texts: list[str],
    concurrency: int,
    args: argparse.Namespace,
    server_pid: int,
) -> Level:
    """One server level, with the batches and forward time the server reports for it and its CPU
    time."""
    batches, forward_s = scrape_forward_totals(url)
    cpu = process_cpu_seconds(server_pid)
    level = asyncio.run(
        measure_server(
            url,
            name,
            texts,
            args.items_per_request,
            concurrency,
            args.time_limit,
            args.task,
            args.request_timeout,
            args.client,
        )
    )
    cpu_after = process_cpu_seconds(server_pid)
    batches_after, forward_after = scrape_forward_totals(url)
    level.batches, level.forward_s = batches_after - batches, forward_after - forward_s
    if cpu is not None and cpu_after is not None:
        level.server_cpu_s = cpu_after - cpu
    return level


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``); ``None`` elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_port is not None:
        serve(args)
        return
    with tempfile.TemporaryDirectory(prefix="uniembed-random-v4-") as tmp:
        if args.tiny or args.mid:
            args.model = str(write_random_v4("mid" if args.mid else "tiny", Path(tmp)))
            args.tiny = args.mid = False
        levels = run(args)
    print_table(levels, baseline=levels[0], client=args.client)
    if args.json is not None:
        rows = [
            {**asdict(level), "items_per_s": level.items_per_s, "latencies": None}
            for level in levels
        ]
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
