"""Load test: the HTTP server's throughput and latency next to the library's own, in one run.

The script measures ``Embedder.encode`` in this process on short texts, then starts the server
(uvicorn in a subprocess, on 127.0.0.1 and a free port) with the same model and sends the same texts
at concurrency 1, 8 and 64 with asyncio + httpx (one connection per simulated client). It prints one
table: items/s, p50/p99 latency, failed requests, the ratio server/library and the load generator's
own CPU use (it shares the machine with the server). Request counts and time per level are bounded; nothing
but 127.0.0.1 is contacted. A benchmark, not a test: nothing is asserted about timings.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from uniembed.embedder import Embedder

HOST = "127.0.0.1"
TOPICS = ("solar panels", "tax forms", "rust lifetimes", "sourdough", "tide tables", "jazz chords")


# ----------------------------------------------------------------- inputs and model
def short_texts(count: int) -> list[str]:
    """``count`` distinct short texts (6–10 words), the same on every run.

    >>> short_texts(2)
    ['question 0: how do solar panels work in practice', 'question 1: how do tax forms work in practice']
    """
    return [f"question {i}: how do {TOPICS[i % len(TOPICS)]} work in practice" for i in range(count)]


def build_embedder(args: argparse.Namespace) -> Embedder:
    """The model named by the arguments: FakeModel, or a snapshot loaded with ``uniembed.load``."""
    from uniembed import load
    from uniembed.embedder import Embedder
    from uniembed.engine import BatchPolicy
    from uniembed.testing.fake import FakeModel

    if args.fake:
        return Embedder(FakeModel(), BatchPolicy(args.token_budget, args.max_batch_size))
    return load(args.model, device=args.device, dtype=args.dtype, token_budget=args.token_budget,
                max_batch_size=args.max_batch_size)


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

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def measure_library(embedder: Embedder, texts: list[str], per_request: int, task: str | None) -> list[Level]:
    """Library throughput: all texts in one call (best case), and one call per request-sized group."""
    embedder.encode(texts[: min(len(texts), 16)], task)  # warm-up: lazy init, allocator
    started = time.perf_counter()
    embedder.encode(texts, task)
    one_call = Level("library, one call", 1, 1, len(texts), 0, time.perf_counter() - started)
    groups = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    latencies = []
    started = time.perf_counter()
    for group in groups:
        begun = time.perf_counter()
        embedder.encode(group, task)
        latencies.append(time.perf_counter() - begun)
    per_call = Level("library, per request", 1, len(groups), len(texts), 0, time.perf_counter() - started)
    per_call.p50_ms, per_call.p99_ms = percentiles_ms(latencies)
    return [one_call, per_call]


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
    url: str, model: str, texts: list[str], per_request: int, concurrency: int, time_limit: float,
    task: str | None, timeout: float,
) -> Level:
    """Send ``texts`` in requests of ``per_request`` items from ``concurrency`` workers; stop early
    (and count only finished requests) when ``time_limit`` seconds have passed."""
    bodies = [_body(model, texts[i : i + per_request], task) for i in range(0, len(texts), per_request)]
    latencies: list[float] = []
    failures = 0
    done_items = 0
    next_index = 0
    deadline = time.perf_counter() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, failures, done_items
        while next_index < len(bodies) and time.perf_counter() < deadline:
            body = bodies[next_index]
            next_index += 1
            begun = time.perf_counter()
            ok = await _post(client, url, body)
            latencies.append(time.perf_counter() - begun)
            if ok:
                done_items += len(body["input"])
            else:
                failures += 1

    # One client (one keep-alive connection) per worker, like independent users. A single shared
    # client is much slower here: httpcore scans every pooled connection (a socket poll each) for
    # every request, so at concurrency 64 the load generator itself saturated a CPU core.
    clients = [_client(timeout) for _ in range(concurrency)]
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(client) for client in clients))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    level = Level("server", concurrency, len(latencies), done_items, failures, seconds, client_cpu_s=cpu_seconds)
    level.p50_ms, level.p99_ms = percentiles_ms(latencies)
    return level


def _client(timeout: float) -> httpx.AsyncClient:
    """A client with one connection; plain HTTP to 127.0.0.1, so no CA bundle is loaded (``verify=False``)."""
    import httpx

    return httpx.AsyncClient(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), timeout=timeout,
                             verify=False)


def _body(model: str, texts: list[str], task: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": texts}
    if task is not None:
        body["task"] = task
    return body


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> bool:
    """Whether one request got a 200 with one embedding per input."""
    import httpx

    try:
        response = await client.post(f"{url}/v1/embeddings", json=body)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and len(response.json().get("data", [])) == len(body["input"])


# ----------------------------------------------------------------- the server process
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def serve(args: argparse.Namespace) -> None:
    """Child process: run the server for the model named by ``args`` on ``args.serve_port``."""
    import uvicorn

    from uniembed.server.app import create_app
    from uniembed.server.settings import ServerSettings

    embedder = build_embedder(args)
    name = served_name(args, embedder)
    settings = ServerSettings(models=(name,), host=HOST, port=args.serve_port, device=args.device, dtype=args.dtype,
                              token_budget=args.token_budget, max_batch_size=args.max_batch_size,
                              log_level="warning")
    app = create_app(settings, {name: embedder})
    uvicorn.run(app, host=HOST, port=args.serve_port, log_level="warning")


def served_name(args: argparse.Namespace, embedder: Embedder) -> str:
    return embedder.info.name if args.fake else Path(args.model).name


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start :func:`serve` in a subprocess with the same model arguments."""
    command = [sys.executable, str(Path(__file__).resolve()), *model_arguments(args), "--serve-port", str(port)]
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def model_arguments(args: argparse.Namespace) -> list[str]:
    result = ["--fake"] if args.fake else ["--model", str(args.model)]
    for flag, value in (("--device", args.device), ("--dtype", args.dtype)):
        if value is not None:
            result += [flag, value]
    return result + ["--token-budget", str(args.token_budget), "--max-batch-size", str(args.max_batch_size)]


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``/ready`` until it answers 200; fail with the server's log when it dies or times out."""
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
def print_table(levels: list[Level], baseline: Level) -> None:
    """One line per measurement, with throughput relative to the library's best case."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"uniembed load test ({baseline.items} short texts per level)")
    columns = ("mode", "concurrency", "requests", "failed", "items/s", "p50 ms", "p99 ms", "server/library",
               "client CPU")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for level in levels:
        ratio = level.items_per_s / baseline.items_per_s if baseline.items_per_s else 0.0
        table.add_row(level.mode, str(level.concurrency), str(level.requests), str(level.failed),
                      f"{level.items_per_s:.1f}", _ms(level.p50_ms), _ms(level.p99_ms), f"{ratio:.2f}",
                      _share(level.client_cpu_s, level.seconds))
    Console(width=max(shutil.get_terminal_size().columns, 130)).print(table)


def _share(cpu_seconds: float | None, seconds: float) -> str:
    """The load generator's CPU use as a share of one core, e.g. ``'35%'``; ``-`` for library rows."""
    return "-" if cpu_seconds is None or seconds <= 0 else f"{100 * cpu_seconds / seconds:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ----------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="local snapshot (or hub id) of jina-embeddings-v4 or v3")
    model.add_argument("--tiny", action="store_true", help="a tiny random v4 checkpoint written to a temp folder")
    model.add_argument("--mid", action="store_true", help="a mid-size random v4 checkpoint (real compute on CPU)")
    model.add_argument("--fake", action="store_true", help="FakeModel: measures the server's own overhead")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--task", help="API task name sent with every request (default: the model's)")
    parser.add_argument("--requests", type=int, default=256, help="requests per concurrency level (max 10000)")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated levels, each 1..256")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level, at most")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # internal: child server process
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if not 1 <= args.requests <= 10_000 or not all(1 <= c <= 256 for c in args.levels):
        parser.error("--requests must be 1..10000 and each concurrency 1..256")
    if not 1 <= args.items_per_request <= 2048:
        parser.error("--items-per-request must be 1..2048")
    return args


def run(args: argparse.Namespace) -> list[Level]:
    texts = short_texts(args.requests * args.items_per_request)
    embedder = build_embedder(args)
    name = served_name(args, embedder)
    print(f"library: {embedder.info.name} on {getattr(embedder.model, 'device', '?')}, {len(texts)} texts", flush=True)
    levels = measure_library(embedder, texts, args.items_per_request, args.task)
    del embedder  # free its memory before the server loads its own copy
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="uniembed-loadtest-") as tmp:
        log = Path(tmp) / "server.log"
        process = start_server(args, port, log)
        try:
            wait_until_ready(url, process, log, args.startup_timeout)
            asyncio.run(measure_server(url, name, texts[:8], 1, 1, 30.0, args.task, args.request_timeout))  # warm-up
            for concurrency in args.levels:
                print(f"server: concurrency {concurrency}", flush=True)
                levels.append(asyncio.run(measure_server(url, name, texts, args.items_per_request, concurrency,
                                                         args.time_limit, args.task, args.request_timeout)))
        finally:
            stop_server(process)
    return levels


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
    print_table(levels, baseline=levels[0])
    if args.json is not None:
        rows = [{**asdict(level), "items_per_s": level.items_per_s} for level in levels]
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
