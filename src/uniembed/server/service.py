"""What ``POST /v1/embeddings`` does, independent of routing: parse → plan → batch → encode.

CPU work (tokenising, image decoding, JSON encoding) runs in worker threads so the event loop only
shuffles requests; model work runs on the model's batch worker (:mod:`uniembed.server.batching`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from collections.abc import Sequence as Seq

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from uniembed.embedder import EncodeOptions, EncodeResult, Plan
from uniembed.encoding import encode_all
from uniembed.errors import InputTooLarge
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.parse import aparse_api_items
from uniembed.models.base import SequenceOutput
from uniembed.server.batching import Batcher
from uniembed.server.metrics import Metrics
from uniembed.server.registry import ModelRegistry
from uniembed.server.schemas import EmbeddingRequest
from uniembed.server.settings import ServerSettings

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never seen by a client


class EmbeddingService:
    """Serves embedding requests for every model of a :class:`ModelRegistry`."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        batchers: Mapping[str, Batcher],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.batchers = dict(batchers)
        self.metrics = metrics
        self.fetcher = SafeFetcher(settings.input_limits)

    async def embed(self, body: EmbeddingRequest, request: Request) -> Response:
        """Answer one request; rows of a client that disconnects are dropped before they run."""
        served, embedder = self.registry.resolve(body.model)
        raw = body.raw_inputs()
        self._check_item_count(len(raw))
        items, _origin = await aparse_api_items(raw, self.settings.input_limits, self.fetcher)
        self._check_item_count(len(items))
        options = self._options(body, embedder.info.max_tokens)
        plan: Plan = await run_in_threadpool(embedder.plan, items, body.task, options)
        self._check_request_tokens(plan)
        outputs = await self._run_until_disconnect(self.batchers[served], plan, request)
        if outputs is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        payload = await run_in_threadpool(self._response_body, served, plan, outputs, body)
        return Response(payload, media_type="application/json")

    # ----------------------------------------------------------------- limits and options
    def _check_item_count(self, count: int) -> None:
        limit = self.settings.max_items_per_request
        if count > limit:
            raise InputTooLarge(
                f"request has {count} inputs (PDF pages count one each), more than the limit of {limit}; "
                "split it into several requests"
            )

    def _options(self, body: EmbeddingRequest, model_max_tokens: int) -> EncodeOptions:
        per_item = self.settings.max_tokens_per_item
        return EncodeOptions(
            dimensions=body.dimensions,
            multivector=body.return_multivector,
            late_chunking=body.late_chunking,
            truncate=body.truncate,
            normalized=body.normalized,
            max_tokens=min(per_item, model_max_tokens) if per_item is not None else None,
        )

    def _check_request_tokens(self, plan: Plan) -> None:
        total = sum(sequence.num_tokens for sequence in plan.sequences)
        limit = self.settings.max_tokens_per_request
        if total > limit:
            raise InputTooLarge(
                f"request has {total} tokens, more than the limit of {limit} per request; "
                "send fewer or shorter inputs"
            )

    # ----------------------------------------------------------------- batching
    async def _run_until_disconnect(
        self, batcher: Batcher, plan: Plan, request: Request
    ) -> list[SequenceOutput] | None:
        """The plan's outputs from the shared queue, or ``None`` when the client left first."""
        job = batcher.submit(plan.sequences)
        result = asyncio.wrap_future(job.future)
        watcher = asyncio.ensure_future(_client_disconnected(request))
        try:
            await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not job.finished:
                batcher.cancel(job)
        if not result.done() or result.cancelled():
            return None
        return result.result()

    # ----------------------------------------------------------------- response
    def _response_body(
        self, served: str, plan: Plan, outputs: Seq[SequenceOutput], body: EmbeddingRequest
    ) -> bytes:
        result: EncodeResult = plan.assemble(outputs)
        self.metrics.tokens.labels(served).inc(result.total_tokens)
        key = "embeddings" if body.return_multivector else "embedding"
        encoded = encode_all(result.embeddings, body.kinds)
        document = {
            "model": served,
            "object": "list",
            "usage": {"total_tokens": result.total_tokens, "prompt_tokens": result.total_tokens},
            "data": [{"object": "embedding", "index": i, key: value} for i, value in enumerate(encoded)],
        }
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


async def _client_disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

