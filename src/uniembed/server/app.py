"""Build the FastAPI application from settings and already-loaded embedders.

Nothing is loaded or read at import: ``uniembed serve`` loads the models, then calls
:func:`create_app`; tests pass :class:`~uniembed.testing.fake.FakeModel` embedders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from uniembed.embedder import Embedder
from uniembed.engine import BatchPolicy
from uniembed.server.auth import ApiKeyCheck
from uniembed.server.batching import Batcher
from uniembed.server.body_limit import BodyLimitMiddleware
from uniembed.server.errors import install_error_handlers
from uniembed.server.metrics import Metrics, MetricsMiddleware
from uniembed.server.registry import ModelRegistry
from uniembed.server.routes import build_router
from uniembed.server.service import EmbeddingService
from uniembed.server.settings import ServerSettings

DESCRIPTION = """Self-hosted embeddings with the Jina and OpenAI `POST /v1/embeddings` API.
See docs/server.md for every setting, limit and error."""


def create_app(settings: ServerSettings, embedders: Mapping[str, Embedder]) -> FastAPI:
    """The service for ``embedders`` (served name → embedder); batch workers run during the lifespan.

    State is reachable for tests and operators as ``app.state.batchers``, ``app.state.metrics`` and
    ``app.state.registry``.
    """
    registry = ModelRegistry(embedders)
    metrics = Metrics()
    policy = BatchPolicy(settings.token_budget, settings.max_batch_size)
    batchers = {
        name: Batcher(name, embedder.model.forward, policy, settings.max_queue_rows, metrics, settings.torch_threads)
        for name, embedder in registry.embedders.items()
    }
    service = EmbeddingService(settings, registry, batchers, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in batchers.values():
            batcher.start()
        try:
            yield
        finally:
            for batcher in batchers.values():
                await run_in_threadpool(batcher.stop)
            await run_in_threadpool(service.close)

    app = FastAPI(title="uniembed", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.batchers = batchers
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(build_router(service, registry, batchers, metrics, ApiKeyCheck(settings.api_keys)))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s too
    return app
