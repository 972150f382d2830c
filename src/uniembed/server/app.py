"""Build the FastAPI application from settings and already-loaded embedders.

Nothing is loaded or read at import: ``uniembed serve`` loads the models, then calls
:func:`create_app`; tests pass :class:`~uniembed.testing.fake.FakeModel` embedders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from uniembed.embedder import Embedder
from uniembed.server.auth import ApiKeyCheck
from uniembed.server.connections import ConcurrencyLimitMiddleware
from uniembed.server.errors import install_error_handlers
from uniembed.server.memory import MemoryReleaseMiddleware, configure_allocator
from uniembed.server.metrics import Metrics, MetricsMiddleware
from uniembed.server.registry import ModelRegistry
from uniembed.server.request_body import RequestBodyMiddleware
from uniembed.server.routes import build_router
from uniembed.server.service import EmbeddingService
from uniembed.server.settings import ServerSettings

if TYPE_CHECKING:
    from uniembed.retrieval.index import Index

DESCRIPTION = """Self-hosted embeddings with the Jina and OpenAI `POST /v1/embeddings` API.
See docs/server.md for every setting, limit and error."""


def load_embedders(settings: ServerSettings) -> dict[str, Embedder]:
    """Every model of ``settings`` loaded (served name → embedder); fails fast with a clear
    message."""
    import functools

    from uniembed.engine.threads import call_on_temporary_thread
    from uniembed.loader import load

    embedders = {}
    for source, served in zip(settings.models, settings.served_names):
        # not on the main thread: see uniembed.engine.threads (torch work stays off long-lived
        # threads)
        embedders[served] = call_on_temporary_thread(
            functools.partial(
                load,
                source,
                device=settings.device,
                dtype=settings.dtype,
                token_budget=settings.token_budget,
                max_batch_size=settings.max_batch_size,
                adapters=dict(settings.adapters),
                packing=settings.packing,
            )
        )
    return embedders


def build_app(settings: ServerSettings) -> tuple[FastAPI, Index | None]:
    """What ``uniembed serve`` runs, in this process or on each Ray Serve replica: every model
    loaded, the index opened (``settings.index``), :func:`create_app`. The caller closes the index
    when the app stops."""
    embedders = load_embedders(settings)
    index = None
    if settings.index:
        from uniembed.retrieval.index import open_served_index

        index = open_served_index(settings.index, embedders)
    return create_app(settings, embedders, index), index


def create_app(
    settings: ServerSettings, embedders: Mapping[str, Embedder], index: Index | None = None
) -> FastAPI:
    """The service for ``embedders`` (served name → embedder); their engines' workers run during the
    lifespan (batching is the embedders' own: ``uniembed.load(token_budget=…, max_batch_size=…)``).
    Run it with :func:`uniembed.server.connections.uvicorn_config` for the connection limits and
    timeouts (any ASGI server works, without them).

    State is reachable for tests and operators as ``app.state.engines``, ``app.state.metrics`` and
    ``app.state.registry``.
    """
    sources = (
        dict(zip(embedders, settings.models)) if len(settings.models) == len(embedders) else {}
    )
    registry = ModelRegistry(embedders, sources)
    metrics = Metrics()
    engines = {name: embedder.engine for name, embedder in registry.embedders.items()}
    service = EmbeddingService(settings, registry, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_allocator()  # large buffers unmapped when freed (server/memory.py)
        for name, engine in engines.items():
            engine.start(
                max_queue_rows=settings.max_queue_rows,
                torch_threads=settings.torch_threads,
                observer=metrics.for_model(name),
                max_gather_seconds=settings.batch_gather_ms / 1000,
            )
        try:
            yield
        finally:
            for engine in engines.values():
                await run_in_threadpool(engine.stop)
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="uniembed", description=DESCRIPTION, lifespan=lifespan, redirect_slashes=False
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.engines = engines
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(build_router(service, registry, metrics, ApiKeyCheck(settings.api_keys)))
    if index is not None:  # uniembed serve --index: search routes and page (search_routes.py)
        from uniembed.server.search_routes import build_search_router

        app.include_router(build_search_router(index, ApiKeyCheck(settings.api_keys), settings))
    # the last added runs first: the body is read (bounded in size and time) before the request
    # takes a concurrency slot, so a body that trickles in holds no slot (server/connections.py)
    app.add_middleware(
        ConcurrencyLimitMiddleware, max_requests=settings.max_concurrent_requests, metrics=metrics
    )
    app.add_middleware(
        RequestBodyMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout,
        metrics=metrics,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # counts 413s and 503s too
    # outermost: after a request is answered and timed, free pages go back (server/memory.py)
    app.add_middleware(MemoryReleaseMiddleware)
    return app
