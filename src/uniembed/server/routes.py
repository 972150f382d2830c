"""HTTP routes: thin functions that hand work to the service objects they close over.

Every route answers with and without a trailing slash (``POST /v1/embeddings/`` is not redirected:
clients do not repeat a POST body after a 307).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from uniembed.server.auth import ApiKeyCheck
from uniembed.server.errors import error_response
from uniembed.server.metrics import Metrics
from uniembed.server.registry import ModelRegistry, ServedModel
from uniembed.server.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from uniembed.server.service import EmbeddingService


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses (``e400="…"``), all with the one error body."""
    return {
        int(key[1:]): {"model": ErrorResponse, "description": text}
        for key, text in described.items()
    }


COMMON_ERRORS = _errors(
    e401="Missing or invalid API key",
    e408="The request body did not arrive within the body timeout",
    e413="The body is larger than its limit",
    e415="A Content-Encoding other than gzip, deflate or identity",
    e503=(
        "Overloaded (too many connections or requests in progress) or not ready; retry after "
        "Retry-After seconds"
    ),
)
EMBEDDING_ERRORS = COMMON_ERRORS | _errors(
    e400=(
        "The body is not JSON (any flaw: code invalid_json), or an input is invalid: undecodable "
        "image or PDF, refused or failed URL, unknown task … (the message names the input)"
    ),
    e404="The model is not served (the message lists the served names)",
    e413=(
        "A limit was exceeded: body, inputs, pixels or downloads per request, tokens, one input's "
        "size (the message names the limit)"
    ),
    e415="The body is not sent as application/json, or its Content-Encoding is not supported",
    e422=(
        "The JSON does not fit the schema (code invalid_request), or an option does not fit the "
        "model: dimensions out of range, dimensions with multi-vectors, a task contradicting the "
        "model name (code invalid_option)"
    ),
    e429="The model's queue is full; retry after Retry-After seconds",
    e500="The model failed on a batch holding these inputs",
)


def build_router(
    service: EmbeddingService,
    registry: ModelRegistry,
    metrics: Metrics,
    auth: ApiKeyCheck,
) -> APIRouter:
    """All routes of the service; ``/v1/*`` requires an API key when keys are configured."""
    router = APIRouter(redirect_slashes=False)
    created = int(time.time())
    secured = [Depends(auth)]

    def card(model: ServedModel) -> ModelCard:
        return ModelCard(
            id=model.id,
            created=created,
            root=model.served,
            task=model.task,
            default_task=model.default_task,
            info=_model_info(model),
        )

    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await service.embed(body, request)

    async def list_models() -> ModelList:
        return ModelList(data=[card(model) for model in registry.models.values()])

    async def get_model(model_id: str) -> ModelCard:
        return card(registry.lookup(model_id))

    for slash in ("", "/"):
        shown = not slash
        router.add_api_route(
            "/v1/embeddings" + slash,
            create_embeddings,
            methods=["POST"],
            response_model=EmbeddingResponse,
            dependencies=secured,
            responses=EMBEDDING_ERRORS,
            include_in_schema=shown,
            summary="Create embeddings (Jina and OpenAI forms)",
        )
        router.add_api_route(
            "/v1/models" + slash,
            list_models,
            methods=["GET"],
            response_model=ModelList,
            dependencies=secured,
            responses=COMMON_ERRORS,
            include_in_schema=shown,
            summary="Every served name and task name (a task name carries its task)",
        )
    router.add_api_route(
        "/v1/models/{model_id:path}",
        get_model,
        methods=["GET"],
        response_model=ModelCard,
        dependencies=secured,
        responses=COMMON_ERRORS | _errors(e404="No such model"),
        summary="One listed model",
    )

    @router.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Readiness: models loaded and batch workers running",
        responses=_errors(e503="Not ready"),
    )
    async def ready() -> JSONResponse:
        stopped = [
            name for name, embedder in registry.embedders.items() if not embedder.engine.is_running
        ]
        if stopped:
            return error_response(
                "not_ready",
                f"not ready: batch workers not running for {', '.join(stopped)}",
            )
        return JSONResponse({"status": "ready", "models": registry.names})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router


def _model_info(model: ServedModel) -> dict[str, object]:
    info = model.embedder.info
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
