"""HTTP routes: thin functions that hand work to the service objects they close over."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from uniembed.embedder import Embedder
from uniembed.server.auth import ApiKeyCheck
from uniembed.server.errors import error_response
from uniembed.server.metrics import Metrics
from uniembed.server.registry import ModelRegistry
from uniembed.server.schemas import EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList
from uniembed.server.service import EmbeddingService

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid input (the message names the input)"},
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown model"},
    413: {"description": "A size limit was exceeded"},
    422: {"description": "Request validation failed"},
    429: {"description": "Queue full; retry after Retry-After seconds"},
    503: {"description": "Not ready (starting or shutting down)"},
}


def build_router(
    service: EmbeddingService,
    registry: ModelRegistry,
    metrics: Metrics,
    auth: ApiKeyCheck,
) -> APIRouter:
    """All routes of the service; ``/v1/*`` requires an API key when keys are configured."""
    router = APIRouter()
    created = int(time.time())
    secured = [Depends(auth)]

    @router.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=secured,
                 responses=ERROR_RESPONSES, summary="Create embeddings (Jina and OpenAI forms)")
    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await service.embed(body, request)

    @router.get("/v1/models", response_model=ModelList, dependencies=secured, summary="List served models")
    async def list_models() -> ModelList:
        cards = [ModelCard(id=name, created=created, info=_model_info(embedder))
                 for name, embedder in registry.embedders.items()]
        return ModelList(data=cards)

    @router.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", summary="Readiness: models loaded and batch workers running",
                responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        stopped = [name for name, embedder in registry.embedders.items() if not embedder.engine.is_running]
        if stopped:
            return error_response(503, f"not ready: batch workers not running for {', '.join(stopped)}")
        return JSONResponse({"status": "ready", "models": registry.names})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router


def _model_info(embedder: Embedder) -> dict[str, object]:
    info = embedder.info
    return {
        "name": info.name,
        "family": info.family,
        "dimensions": info.dim,
        "matryoshka_dims": list(info.matryoshka_dims),
        "max_tokens": info.max_tokens,
        "tasks": list(info.tasks),
        "default_task": info.default_task,
        "multivector_dim": info.multivector_dim,
        "modalities": sorted(info.modalities),
    }
