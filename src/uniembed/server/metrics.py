"""Prometheus metrics in a registry owned by one app (never the global registry)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uniembed.engine.stats import BatchStats, EngineObserver

KNOWN_PATHS = frozenset(
    {
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/redoc",
        "/openapi.json",
    }
)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never seen by a client
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Every metric of the service; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "uniembed_requests", "HTTP requests by path and status.", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "uniembed_request_duration_seconds",
            "HTTP request latency.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "uniembed_batch_size",
            "Rows per model forward batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.forward_seconds = Histogram(
            "uniembed_forward_duration_seconds",
            "Time of one forward batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "uniembed_queue_depth", "Rows waiting for a forward batch.", ["model"], registry=r
        )
        self.tokens = Counter(
            "uniembed_tokens",
            "Tokens embedded (the usage reported to clients).",
            ["model"],
            registry=r,
        )
        self.rows = Counter("uniembed_rows", "Rows run through the model.", ["model"], registry=r)
        self.rows_dropped = Counter(
            "uniembed_rows_dropped",
            "Queued rows dropped because their client left.",
            ["model"],
            registry=r,
        )
        self.batch_failures = Counter(
            "uniembed_batch_failures", "Forward batches that raised.", ["model"], registry=r
        )
        self.rejected = Counter(
            "uniembed_requests_rejected",
            "Requests refused because the queue was full.",
            ["model"],
            registry=r,
        )
        self.connections_open = Gauge(
            "uniembed_connections_open", "Open client connections.", registry=r
        )
        self.connections_closed = Counter(
            "uniembed_connections_closed",
            "Connections the server closed or refused: header_timeout, evicted (the longest idle, "
            "at the connection limit), refused (503: at the limit with every connection busy), "
            "body_timeout (408).",
            ["reason"],
            registry=r,
        )
        self.requests_shed = Counter(
            "uniembed_requests_shed",
            "Requests answered 503 at the limit of requests in progress.",
            registry=r,
        )

        self._models: dict[str, ModelMetrics] = {}
        self._http: dict[tuple[str, str], tuple[Any, Any]] = {}

    def for_model(self, name: str) -> ModelMetrics:
        """The metrics of one model, labelled once (``labels()`` costs a lock and a lookup per
        call)."""
        if name not in self._models:
            self._models[name] = ModelMetrics(
                *(
                    metric.labels(name)
                    for metric in (
                        self.batch_size,
                        self.forward_seconds,
                        self.queue_depth,
                        self.tokens,
                        self.rows,
                        self.rows_dropped,
                        self.batch_failures,
                        self.rejected,
                    )
                )
            )
        return self._models[name]

    def for_response(self, path: str, status: int) -> tuple[Any, Any]:
        """(request counter, latency histogram) of one path and status, labelled once."""
        key = (path, str(status))
        if key not in self._http:
            self._http[key] = (self.requests.labels(*key), self.latency.labels(path))
        return self._http[key]

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelMetrics(EngineObserver):
    """The per-model children of :class:`Metrics` (one model's label applied), fed by its engine."""

    def __init__(
        self,
        batch_size: Any,
        forward_seconds: Any,
        queue_depth: Any,
        tokens: Any,
        rows: Any,
        rows_dropped: Any,
        batch_failures: Any,
        rejected: Any,
    ) -> None:
        self.batch_size = batch_size
        self.forward_seconds = forward_seconds
        self.queue_depth = queue_depth
        self.tokens = tokens
        self.rows = rows
        self.dropped = rows_dropped
        self.batch_failures = batch_failures
        self.rejected = rejected

    def batch_finished(self, stats: BatchStats) -> None:
        self.forward_seconds.observe(stats.seconds)
        self.batch_size.observe(stats.rows)
        self.rows.inc(stats.rows)

    def batch_failed(self, rows: int) -> None:
        self.batch_failures.inc()

    def rows_dropped(self, count: int) -> None:
        self.dropped.inc(count)

    def job_rejected(self) -> None:
        self.rejected.inc()

    def queue_changed(self, rows: int) -> None:
        self.queue_depth.set(rows)


class MetricsMiddleware:
    """Count every HTTP response by path and status and time it (error responses included). A
    request that ends without a response — its client left — is counted as 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = path_label(scope["path"])
        status = CLIENT_CLOSED_REQUEST
        start = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException:
            if status == CLIENT_CLOSED_REQUEST:
                status = 500
            raise
        finally:
            counter, latency = self.metrics.for_response(path, status)
            counter.inc()
            latency.observe(time.perf_counter() - start)


def path_label(path: str) -> str:
    """The ``path`` label of a request path: a known route (trailing slash ignored) or ``other``.

    >>> path_label("/v1/embeddings/"), path_label("/v1/models/jina-embeddings-v4"), path_label("/x")
    ('/v1/embeddings', '/v1/models/{id}', 'other')
    """
    path = path.rstrip("/") or "/"
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return path if path in KNOWN_PATHS else "other"
