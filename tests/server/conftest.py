"""A real uvicorn server on 127.0.0.1 (free port, in a thread) around FakeModel embedders."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest

from tests.helpers import png_bytes
from uniembed.embedder import Embedder
from uniembed.models.base import Row, RowOutput
from uniembed.server.app import create_app
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel
from uniembed.testing.live import LiveServer


class GatedModel(FakeModel):
    """FakeModel whose forward waits for ``gate`` (to hold the worker busy) and can be made to
    fail."""

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
    _ImageHandler.body = png_bytes((10, 200, 30), (16, 16))
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
