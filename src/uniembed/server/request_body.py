"""Read a request body within bounds before the app sees it: size, time and ``Content-Encoding``.

* Size: a ``Content-Length`` over ``max_bytes`` is refused (413) before any of the body is read; a
  body without one (chunked) is counted while it streams and refused as soon as it passes the limit.
* Time: the whole body must arrive within ``timeout`` seconds of the headers, else 408 (and the
  connection is closed): a client sending a byte a second cannot hold a request open for ever.
* Encoding: ``gzip`` (or ``x-gzip``) and ``deflate`` bodies are decompressed as they arrive; the
  *decompressed* size is held to ``max_bytes`` too, so a gzip bomb is refused after at most
  ``max_bytes`` of output. Other encodings get 415. The app sees the plain body (the
  ``Content-Encoding`` header removed, ``Content-Length`` set to the plain size).
"""

from __future__ import annotations

import zlib

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uniembed.server.errors import error_response
from uniembed.server.metrics import Metrics

DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib window bits per accepted ``Content-Encoding`` (gzip framing, zlib framing)."""


class BodyRefused(Exception):
    """The body broke a rule; ``code`` (in :data:`~uniembed.server.errors.ERROR_CODES`) and
    ``message`` are the answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RequestBodyMiddleware:
    """Pure ASGI middleware; see the module docstring. An accepted body is replayed to the app."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, timeout: float, metrics: Metrics | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            decoder = _decoder(_header(scope, b"content-encoding"))
            self._check_declared_size(_header(scope, b"content-length"))
            body = await self._read(receive, decoder)
        except BodyRefused as refused:
            if refused.code == "request_timeout" and self.metrics is not None:
                self.metrics.connections_closed.labels("body_timeout").inc()
            response = error_response(refused.code, refused.message, {"Connection": "close"})
            await response(scope, receive, send)
            return
        if body is None:
            return  # the client left while uploading: nothing to answer
        if decoder is not None:
            scope = _plain_scope(scope, len(body))
        await self.app(scope, _replay(body, receive), send)

    def _check_declared_size(self, declared: str | None) -> None:
        if declared is None:
            return
        if not declared.strip().isdigit():
            raise BodyRefused("invalid_header", "invalid Content-Length header")
        if int(declared) > self.max_bytes:
            raise self._too_large()

    async def _read(self, receive: Receive, decoder: zlib._Decompress | None) -> bytes | None:
        """The whole (decoded) body, or ``None`` when the client disconnects first."""
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                if decoder is not None:
                    chunk = self._decode(decoder, chunk, size, final=not more)
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                chunks.append(chunk)
                if not more:
                    return b"".join(chunks)
        assert deadline.cancelled_caught
        raise BodyRefused(
            "request_timeout", f"the request body did not arrive within {self.timeout:g} s"
        )

    def _decode(self, decoder: zlib._Decompress, data: bytes, size: int, *, final: bool) -> bytes:
        """Decompress at most one byte past the size limit (so a bomb stops there)."""
        room = self.max_bytes - size + 1
        try:
            out = decoder.decompress(data, room)
            if final and len(out) < room and not decoder.unconsumed_tail:
                out += decoder.flush()
        except zlib.error as exc:
            raise BodyRefused(
                "invalid_encoding", f"the body is not valid for its Content-Encoding ({exc})"
            ) from exc
        if decoder.unconsumed_tail:  # output was cut at the limit: more would follow
            raise self._too_large(decoded=True)
        if final and not decoder.eof:
            raise BodyRefused("invalid_encoding", "the compressed body is truncated")
        if decoder.unused_data:
            raise BodyRefused("invalid_encoding", "data follows the end of the compressed body")
        return out

    def _too_large(self, *, decoded: bool = False) -> BodyRefused:
        what = "decompressed request body" if decoded else "request body"
        return BodyRefused(
            "input_too_large",
            f"the {what} is larger than the limit of {self.max_bytes} bytes (max_body_bytes)",
        )


def _decoder(header: str | None) -> zlib._Decompress | None:
    """A decompressor for the ``Content-Encoding`` header, ``None`` for identity; others are 415."""
    codings = [
        c.strip().lower()
        for c in (header or "").split(",")
        if c.strip().lower() not in ("", "identity")
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in DECODERS:
        return zlib.decompressobj(DECODERS[codings[0]])
    raise BodyRefused(
        "unsupported_content_encoding",
        f"Content-Encoding {header!r} is not supported; send gzip, deflate or identity",
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _plain_scope(scope: Scope, size: int) -> Scope:
    """``scope`` as the app sees a decoded body: no ``Content-Encoding``, the plain
    ``Content-Length``."""
    headers = [
        (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
    ]
    return {**scope, "headers": [*headers, (b"content-length", str(size).encode())]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the real one
    (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
