"""What ``POST /v1/embeddings`` does, independent of routing: parse → plan → batch → encode.

Heavy CPU work (tokenising long texts, decoding images, encoding large responses) runs in the
service's worker threads so the event loop never blocks for long; the same work for a small request
(a few short texts) runs on the event loop, where it costs less than the hand-off to a thread would.
Model work runs on the model's engine (:mod:`uniembed.engine`), shared with every other request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from uniembed.encoding import as_float32, encode_all
from uniembed.engine.loop import Engine
from uniembed.engine.threads import single_threaded_torch
from uniembed.errors import BatchFailed, InputTooLarge
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.items import Item, TextItem
from uniembed.inputs.parse import aparse_api_items
from uniembed.models.base import RowOutput
from uniembed.plans import EncodeOptions, EncodeResult, Plan
from uniembed.server.metrics import Metrics
from uniembed.server.registry import ModelRegistry
from uniembed.server.schemas import EmbeddingRequest
from uniembed.server.settings import ServerSettings

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never seen by a client
# Work below these sizes runs on the event loop (well under a millisecond); above, in a worker thread.
INLINE_TEXT_CHARS = 4096  # characters of text, all inputs together, tokenised inline
INLINE_OUTPUT_FLOATS = 8192  # numbers in all output embeddings together, encoded inline

T = TypeVar("T")


class EmbeddingService:
    """Serves embedding requests for every model of a :class:`ModelRegistry`."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.fetcher = SafeFetcher(settings.input_limits)
        self._workers = ThreadPoolExecutor(
            settings.cpu_workers, thread_name_prefix="uniembed-cpu", initializer=single_threaded_torch
        )

    def close(self) -> None:
        """Stop the worker threads (after the last request)."""
        self._workers.shutdown(wait=True, cancel_futures=True)

    async def embed(self, body: EmbeddingRequest, request: Request) -> Response:
        """Answer one request; rows of a client that disconnects are dropped before they run."""
        served, embedder = self.registry.resolve(body.model)
        raw = body.raw_inputs()
        self._check_item_count(len(raw))
        items, _origin = await aparse_api_items(raw, self.settings.input_limits, self.fetcher)
        self._check_item_count(len(items))
        options = self._options(body, embedder.info.max_tokens)
        plan: Plan = await self._compute(_light_inputs(items), embedder.plan, items, body.task, options)
        self._check_request_tokens(plan)
        outputs = await self._run_until_disconnect(embedder.engine, plan, request)
        if outputs is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        light = _light_outputs(outputs, body.return_multivector)
        payload = await self._compute(light, self._response_body, served, plan, outputs, body)
        return Response(payload, media_type="application/json")

    async def _compute(self, inline: bool, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` here when ``inline`` (small work), else on a worker thread."""
        if inline:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, functools.partial(function, *args))

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
            output="multi" if body.return_multivector else "single",
            late_chunking=body.late_chunking,
            truncate=body.truncate,
            normalized=body.normalized,
            max_tokens=min(per_item, model_max_tokens) if per_item is not None else None,
        )

    def _check_request_tokens(self, plan: Plan) -> None:
        total = sum(row.num_tokens for row in plan.rows)
        limit = self.settings.max_tokens_per_request
        if total > limit:
            raise InputTooLarge(
                f"request has {total} tokens, more than the limit of {limit} per request; "
                "send fewer or shorter inputs"
            )

    # ----------------------------------------------------------------- batching
    async def _run_until_disconnect(
        self, engine: Engine, plan: Plan, request: Request
    ) -> list[RowOutput] | None:
        """The plan's outputs from the shared queue, or ``None`` when the client left first."""
        job = engine.submit(plan.rows)
        result = asyncio.wrap_future(job.future)
        watcher = asyncio.get_running_loop().create_task(_client_disconnected(request))
        watcher.add_done_callback(lambda _: result.cancel())  # no-op once the result is in
        try:
            return await result
        except asyncio.CancelledError:
            engine.cancel(job)  # its queued rows never run
            if watcher.done() and not watcher.cancelled():  # the client left
                return None
            raise  # this request itself was cancelled (shutdown)
        finally:
            watcher.cancel()

    # ----------------------------------------------------------------- response
    def _response_body(
        self, served: str, plan: Plan, outputs: Sequence[RowOutput], body: EmbeddingRequest
    ) -> bytes:
        result: EncodeResult = plan.assemble(outputs)
        self.metrics.for_model(served).tokens.inc(result.total_tokens)
        key = "embeddings" if body.return_multivector else "embedding"
        arrays = [as_float32(embedding) for embedding in result.embeddings]
        _check_finite(arrays)
        encoded = encode_all(arrays, body.kinds)
        document = {
            "model": served,
            "object": "list",
            "usage": {"total_tokens": result.total_tokens, "prompt_tokens": result.total_tokens},
            "data": [{"object": "embedding", "index": i, key: value} for i, value in enumerate(encoded)],
        }
        # orjson writes the same shortest round-trip text for each float as json.dumps, ~15x faster
        # (2048 floats: 0.06 ms vs 1.1 ms), and that time is taken from the model's thread (the GIL).
        return orjson.dumps(document)


def _light_inputs(items: Sequence[Item]) -> bool:
    """Only text, and little of it: tokenising it costs less than handing it to a thread."""
    total = 0
    for item in items:
        if not isinstance(item, TextItem):
            return False
        total += len(item.text)
    return total <= INLINE_TEXT_CHARS


def _light_outputs(outputs: Sequence[RowOutput], multivector: bool) -> bool:
    """Few numbers to encode (single vectors of a few inputs), so encoding them inline is cheap."""
    if multivector:
        return False
    return sum(output.pooled.numel() for output in outputs) <= INLINE_OUTPUT_FLOATS


def _check_finite(arrays: Sequence[np.ndarray]) -> None:
    """JSON has no NaN or infinity; a model that produced them failed (a 500 naming the output)."""
    for index, array in enumerate(arrays):
        if not np.isfinite(array).all():
            raise BatchFailed(
                f"the model produced non-finite values (NaN or infinity) for output {index}; "
                "with float16 weights try --dtype bfloat16 or float32"
            )


async def _client_disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

