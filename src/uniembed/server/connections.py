"""Connection hygiene: slow, idle or too many clients cannot starve the service (or ``/health``).

* **Open connections** are capped (``max_connections``). At the cap a new connection closes the
  connection that has been idle longest — one without a request in progress: a keep-alive connection
  between requests, or one still sending its request headers (as nginx reuses idle keep-alive
  connections when it runs out). Without an idle one it closes the connection that has been sending
  its request *body* longest (such a request has no work yet: see below). Only when every connection
  has a request being worked on is the new one answered 503 with ``Retry-After`` and closed. So a
  flood of slow connections — silent, slow headers or slow bodies — cannot lock out a new client.
* **Header timeout**: a connection must deliver complete request headers within ``header_timeout``
  seconds of opening (or of its last response), else it is closed. uvicorn has no such timeout: a
  client that connects and sends nothing (or a byte a minute) would hold its socket for ever.
  ``keep_alive_timeout`` (uvicorn's own) closes a connection idle after a response.
* **Body timeout** (:mod:`uniembed.server.request_body`): the body must arrive within
  ``body_timeout`` seconds of the headers (408).
* **Requests in progress** are capped (``max_concurrent_requests``); more get 503 with
  ``Retry-After`` at once, except ``/health``, ``/ready`` and ``/metrics``. A request takes its slot
  only once its whole body has arrived (:func:`~uniembed.server.app.create_app` puts the body reader
  outside this cap): bodies that trickle in hold a connection, never a slot, so they cannot make a
  well-behaved request fail.

Nothing is silent: every close and refusal is counted in ``/metrics``
(``uniembed_connections_closed_total{reason}``, ``uniembed_requests_shed_total``) and logged, at
most one summary line per :data:`LOG_INTERVAL` seconds.

The limits and the header timeout are enforced by a subclass of uvicorn's HTTP protocol
(:func:`guarded_protocol`) — the level where connections exist before any request does. It uses what
both of uvicorn's HTTP/1.1 protocols (httptools and h11) share: the asyncio protocol methods, the
``on_response_complete`` callback and the current ``cycle``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter, OrderedDict
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from uniembed.server.errors import RETRY_AFTER_SECONDS, error_body, error_response
from uniembed.server.metrics import Metrics
from uniembed.server.settings import ServerSettings

logger = logging.getLogger("uniembed.server.connections")

LOG_INTERVAL = 10.0  # seconds between summary lines of closed connections and shed requests
FILE_HEADROOM = 256  # file descriptors kept for the model, threads and downloads beyond connections
UNMETERED_PATHS = frozenset({"/health", "/ready", "/metrics"})


class SummaryLog:
    """Counts events by reason and logs them as one line at most every ``interval`` seconds."""

    def __init__(self, what: str, interval: float = LOG_INTERVAL) -> None:
        self.what = what
        self.interval = interval
        self._counts: Counter[str] = Counter()
        self._scheduled = False

    def add(self, reason: str) -> None:
        self._counts[reason] += 1
        if not self._scheduled:  # the first event logs at once, later ones in the next summary
            self._scheduled = True
            self.flush()
            asyncio.get_running_loop().call_later(self.interval, self._flush_and_rearm)

    def flush(self) -> None:
        if self._counts:
            total = sum(self._counts.values())
            reasons = ", ".join(f"{count} {reason}" for reason, count in self._counts.most_common())
            logger.warning("%s %d (%s)", self.what, total, reasons)
            self._counts.clear()

    def _flush_and_rearm(self) -> None:
        self.flush()
        self._scheduled = False


class ConnectionGuard:
    """The open connections of one server: the cap, the idle order and the header deadlines."""

    def __init__(
        self, *, max_connections: int, header_timeout: float, metrics: Metrics | None = None
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.metrics = metrics
        self.open = 0
        self._idle: OrderedDict[Any, asyncio.TimerHandle] = OrderedDict()  # longest idle first
        self._uploading: OrderedDict[Any, None] = OrderedDict()  # sending a body, longest first
        self._log = SummaryLog("closed connections:")

    def opened(self, connection: Any) -> bool:
        """Count a new connection and admit it (closing the longest-idle one at the cap, else the
        one sending a body longest); ``False``: refused (every request is being worked on)."""
        admitted = (
            self.open < self.max_connections
            or self._evict_longest_idle()
            or self._evict_longest_upload()
        )
        self.open += 1
        if admitted:
            self._set_idle(connection)
        else:
            self._count("refused")
        return admitted

    def _evict_longest_idle(self) -> bool:
        if not self._idle:
            return False
        oldest, deadline = self._idle.popitem(last=False)
        deadline.cancel()
        self._close(oldest, "evicted")
        return True

    def _evict_longest_upload(self) -> bool:
        if not self._uploading:
            return False
        oldest, _ = self._uploading.popitem(last=False)
        self._close(oldest, "evicted_upload")
        return True

    def update(self, connection: Any) -> None:
        """Note whether ``connection`` has a request in progress now, and whether its body is still
        arriving (after data or a response)."""
        if connection.in_request:
            deadline = self._idle.pop(connection, None)
            if deadline is not None:
                deadline.cancel()
            if connection.uploading:
                self._uploading.setdefault(connection)  # keeps the order of the first chunk
            else:
                self._uploading.pop(connection, None)
        else:
            self._uploading.pop(connection, None)
            if connection not in self._idle:  # a response finished: the wait for headers restarts
                self._set_idle(connection)

    def closed(self, connection: Any) -> None:
        self.open -= 1
        self._uploading.pop(connection, None)
        deadline = self._idle.pop(connection, None)
        if deadline is not None:
            deadline.cancel()
        if self.metrics is not None:
            self.metrics.connections_open.set(self.open)

    def _set_idle(self, connection: Any) -> None:
        loop = asyncio.get_running_loop()
        self._idle[connection] = loop.call_later(self.header_timeout, self._expire, connection)
        if self.metrics is not None:
            self.metrics.connections_open.set(self.open)

    def _expire(self, connection: Any) -> None:
        if self._idle.pop(connection, None) is not None:
            self._close(connection, "header_timeout")

    def _close(self, connection: Any, reason: str) -> None:
        connection.transport.close()
        self._count(reason)

    def _count(self, reason: str) -> None:
        self._log.add(reason)
        if self.metrics is not None:
            self.metrics.connections_closed.labels(reason).inc()


REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: %d\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardedConnection:
    """Mixin over a uvicorn HTTP protocol class: reports to the server's
    :class:`ConnectionGuard`."""

    guard: ConnectionGuard  # set on the class :func:`guarded_protocol` makes
    cycle: Any
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        if not self.guard.opened(self):
            self._refuse()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self.guard.update(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self.guard.update(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        self.guard.closed(self)

    @property
    def in_request(self) -> bool:
        """A request's headers have arrived and its response is not finished."""
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    @property
    def uploading(self) -> bool:
        """A request's headers have arrived, its body has not (and no response has started)."""
        cycle = getattr(self, "cycle", None)
        return (
            cycle is not None
            and cycle.more_body
            and not cycle.response_started
            and not cycle.response_complete
        )

    def _refuse(self) -> None:
        body = orjson.dumps(
            error_body("overloaded", "the server has too many connections; retry shortly")
        )
        self.transport.write(REFUSAL % (RETRY_AFTER_SECONDS, len(body), body))
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type:
    """uvicorn's HTTP/1.1 protocol (httptools when installed, else h11) reporting to ``guard``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("GuardedHTTPProtocol", (GuardedConnection, AutoHTTPProtocol), {"guard": guard})


class ConcurrencyLimitMiddleware:
    """Pure ASGI middleware: at most ``max_requests`` requests in progress (``/health``, ``/ready``
    and ``/metrics`` aside); the rest get 503 with ``Retry-After`` at once."""

    def __init__(self, app: ASGIApp, max_requests: int, metrics: Metrics) -> None:
        self.app = app
        self.max_requests = max_requests
        self.metrics = metrics
        self.in_progress = 0
        self._log = SummaryLog("requests shed (503):")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMETERED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.max_requests:
            self.metrics.requests_shed.inc()
            self._log.add(f"over {self.max_requests} requests in progress")
            message = (
                f"the server has {self.in_progress} requests in progress, its limit; retry shortly"
            )
            await error_response("overloaded", message)(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def raise_file_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards ``wanted`` (up to the hard limit); return
    it.

    Each connection is a file descriptor; the usual soft limit (1024) is below the default
    ``max_connections``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of ``app`` (made by ``create_app``): the guarded protocol, the
    keep-alive timeout, no WebSockets. The connection cap is lowered to what the open-file limit
    allows (after raising it where the hard limit lets us), and that is logged."""
    limit = raise_file_limit(settings.max_connections + FILE_HEADROOM)
    max_connections = min(settings.max_connections, max(limit - FILE_HEADROOM, 1))
    if max_connections < settings.max_connections:
        logger.warning(
            "max_connections lowered from %d to %d: the open-file limit is %d",
            settings.max_connections,
            max_connections,
            limit,
        )
    guard = ConnectionGuard(
        max_connections=max_connections,
        header_timeout=settings.header_timeout,
        metrics=app.state.metrics,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": guarded_protocol(guard),
        "ws": "none",
        "timeout_keep_alive": settings.keep_alive_timeout,
        **overrides,
    }
    return uvicorn.Config(app, **options)
