"""Builders for input tests: handmade PDFs and a local HTTP server on 127.0.0.1.

A plain module (not conftest) so tests can import it; no test contacts anything but 127.0.0.1.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from uniembed.testing.pdfs import assemble_pdf


def handmade_pdf(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    """A PDF from raw object bodies (object 1 is the catalog), with a correct xref table."""
    return assemble_pdf(objects, trailer_extra)


def encrypted_pdf() -> bytes:
    """One page behind the standard security handler with a user password that is not empty."""
    return handmade_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (b"11" * 32, b"22" * 32),
        ],
        b"/Encrypt 4 0 R /ID [<%s> <%s>] " % (b"33" * 16, b"33" * 16),
    )


def pageless_pdf() -> bytes:
    return handmade_pdf(
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    )


@dataclass
class ServerState:
    """What the handler serves and what it saw."""

    routes: dict[str, bytes] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    streamed_bytes: int = 0
    stream_done: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalServer:
    def __init__(self, server: ThreadingHTTPServer, state: ServerState) -> None:
        self.server = server
        self.state = state
        self.port = server.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            with state.lock:
                state.hosts.append(self.headers.get("Host", ""))
                state.paths.append(self.path)
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                self._route(parts.path, query)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeouts, size caps): expected in these tests
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _route(self, path: str, query: dict[str, str]) -> None:
            if path == "/redirect":
                self._send(int(query.get("code", "302")), b"", {"Location": query["to"]})
            elif path == "/loop":
                self._send(302, b"", {"Location": "/loop"})
            elif path == "/no-location":
                self._send(302, b"")
            elif path == "/endless":
                self._stream_forever()
            elif path == "/announced-huge":
                self._send_headers(200, {"Content-Length": str(10**12)})
            elif path == "/gzip":
                self._send(200, b"\x1f\x8b\x08\x00", {"Content-Encoding": "gzip"})
            elif path == "/slow":
                time.sleep(float(query.get("seconds", "2")))
                self._send(200, b"late")
            elif path == "/delayed":
                time.sleep(float(query.get("seconds", "0.1")))
                self._send(200, state.routes[query["name"]])
            elif path in state.routes:
                self._send(200, state.routes[path])
            else:
                self._send(404, b"not found")

        def _send_headers(self, code: int, headers: dict[str, str]) -> None:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self._send_headers(code, {"Content-Length": str(len(body)), **(headers or {})})
            self.wfile.write(body)

        def _stream_forever(self) -> None:
            """No Content-Length: up to 256 MiB, until the client hangs up."""
            self.close_connection = True
            self._send_headers(200, {"Connection": "close"})
            chunk = b"x" * 65536
            try:
                for _ in range(4096):
                    self.wfile.write(chunk)
                    state.streamed_bytes += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                state.stream_done.set()

    return Handler


def start_local_server(tls: ssl.SSLContext | None = None) -> LocalServer:
    """An HTTP(S) server on 127.0.0.1 (random port) in a daemon thread; stop it with ``stop()``."""
    state = ServerState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return LocalServer(server, state)


def self_signed_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A throw-away certificate for DNS name ``name`` (needs the ``openssl`` command)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
