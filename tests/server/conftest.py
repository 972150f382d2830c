"""A real uvicorn server on 127.0.0.1 (free port, in a thread) around FakeModel embedders."""

from __future__ import annotations

import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import httpx
import pytest
import uvicorn
from PIL import Image

from uniembed.embedder import Embedder
from uniembed.models.base import Row, RowOutput
from uniembed.server.app import create_app
from uniembed.server.connections import uvicorn_config
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel


class LiveServer:
    """uvicorn serving ``app`` in a daemon thread; ``url`` is its base URL."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, app.state.settings, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    @property
    def metrics(self) -> Any:
        return self.app.state.metrics

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``uniembed serve`` in its own process (the real command), with its memory and CPU readable
    from /proc; ``url`` is its base URL once it answers /ready."""

    def __init__(self, *args: str, log: Any = subprocess.DEVNULL) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uniembed.cli", "serve", "--port", str(self.port), "--torch-threads", "1",
                   "--log-level", "warning", *args]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, "uniembed serve exited"
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)

    def status_kib(self, field: str) -> int:
        """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in KiB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
        return int(line.split()[1])

    def reset_peak_memory(self) -> None:
        """Set VmHWM (peak RSS) to the current RSS (Linux: clear_refs 5)."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:
            clear.write("5")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class GatedModel(FakeModel):
    """FakeModel whose forward waits for ``gate`` (to hold the worker busy) and can be made to fail."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False
        self.fail_batches_of: int | None = None  # fail every batch with this many rows
        self.rows_seen: list[int] = []

    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        self.entered.set()
        if not self.gate.wait(10):
            raise RuntimeError("gate never opened")
        if self.fail_next or len(batch) == self.fail_batches_of:
            self.fail_next = False
            raise RuntimeError("simulated CUDA failure")
        self.rows_seen.extend(row.num_tokens for row in batch)
        return super().forward(batch)


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_url():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, "PNG")
    _ImageHandler.body = buffer.getvalue()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/cat.png", _ImageHandler.body
    httpd.shutdown()
    httpd.server_close()


ServeFn = Callable[..., LiveServer]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """Start servers for given settings/embedders; all are stopped after the test."""
    started: list[LiveServer] = []

    def start(embedders: dict[str, Embedder] | None = None, **settings: Any) -> LiveServer:
        embedders = embedders or {"fake-model": Embedder(FakeModel())}
        settings.setdefault("models", tuple(embedders))
        server = LiveServer(create_app(ServerSettings(**settings), embedders)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def fake_embedder() -> Embedder:
    return Embedder(FakeModel())


@pytest.fixture(scope="module")
def server(fake_embedder: Embedder) -> Iterator[LiveServer]:
    """One shared server for the read-only tests of a module."""
    settings = ServerSettings(models=("fake-model",))
    with LiveServer(create_app(settings, {"fake-model": fake_embedder})) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as http:
        yield http


@pytest.fixture
def gated() -> GatedModel:
    """A fresh :class:`GatedModel` (gate open)."""
    return GatedModel()
