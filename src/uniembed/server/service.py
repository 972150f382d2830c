"""What ``POST /v1/embeddings`` does, independent of routing: measure → plan → batch → encode.

1. The inputs are read and measured, not decoded (:func:`~uniembed.inputs.parse.aprobe_api_items`):
   the request's budget (items with PDF pages counted from the page count, decoded pixels from image
   headers and page sizes, downloaded bytes) is charged before any pixel is decoded, so a request
   over it is refused (413) having cost a few milliseconds.
2. Text-only requests are checked against the token budget from their characters first
   (:func:`estimated_tokens`: a request estimated at over twice ``max_tokens_per_request`` is
   refused before anything is tokenised), then tokenised in parts of :data:`PLAN_CHARS` characters,
   the running total checked after each part, so an over-budget request costs at most about twice
   the budget's tokenising. Requests with images or PDF pages are decoded, rendered
   and planned in parts of at most :data:`PART_ITEMS` inputs and :data:`PART_PIXELS` pixels, at most
   :data:`PARTS_IN_FLIGHT` parts queued on the model while the next is prepared: decoding, planning
   and running overlap, and a request holds only what is in flight (see docs/server.md, Limits).
3. Everything runs in a task that is cancelled when the client disconnects: no further part is
   decoded or rendered (the part in progress stops at its next image or page), queued rows are
   dropped, and the response is counted as 499.

Heavy CPU work (tokenising long texts, decoding images, encoding large responses) runs in the
service's worker threads so the event loop never blocks for long; the same work for a small request
(a few short texts) runs on the event loop, where it costs less than the hand-off to a thread would.
Model work runs on the model's engine (:mod:`uniembed.engine`), shared with every other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from uniembed.core.checks import all_finite
from uniembed.core.wire import as_float32, encode_all
from uniembed.embedder import Embedder
from uniembed.engine.loop import Job
from uniembed.engine.threads import single_threaded_torch
from uniembed.errors import BatchFailed, InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.items import TextItem
from uniembed.inputs.parse import aprobe_api_items
from uniembed.inputs.pending import Pending, in_parts, load_pending
from uniembed.models.base import RowOutput
from uniembed.plans import EncodeOptions, EncodeResult, Plan
from uniembed.server.metrics import CLIENT_CLOSED_REQUEST, Metrics
from uniembed.server.registry import ModelRegistry, ServedModel
from uniembed.server.schemas import EmbeddingRequest
from uniembed.server.settings import ServerSettings

# Work below these sizes runs on the event loop (well under a millisecond); above, in a worker
# thread.
INLINE_TEXT_CHARS = 4096  # characters of text, all inputs together, tokenised inline
INLINE_OUTPUT_FLOATS = 8192  # numbers in all output embeddings together, encoded inline
# Requests with images or pages are prepared in parts: each part at most this many inputs and
# decoded pixels, at most PARTS_IN_FLIGHT parts queued on the model while the next one is prepared.
# With the v4 defaults a part's rows hold at most 8 × 14.5 MB of preprocessed pixels (602,112 pixels
# a row, float32, 2 temporal patches), so (PARTS_IN_FLIGHT + 1) parts about 350 MB, plus one part's
# decoded pixels (at most 64 M: 192 MB as RGB).
PART_ITEMS = 8
PART_PIXELS = 64 * 1024 * 1024
PARTS_IN_FLIGHT = 2
# Texts are tokenised in parts of about this many characters, the token budget checked after each.
PLAN_CHARS = 256 * 1024
# The token estimate tokenises SAMPLE_SLICES slices of SAMPLE_CHARS characters (start, middle and
# end) of at most SAMPLE_TEXTS texts spread over the request: at most 48k characters (~10 ms), and
# refuses a request only when the estimate passes ESTIMATE_MARGIN times the budget, so a request
# whose sampled text is unusually dense (short tokens) is tokenised and counted exactly instead.
SAMPLE_TEXTS = 32
SAMPLE_SLICES = 3
SAMPLE_CHARS = 512
ESTIMATE_MARGIN = 2

T = TypeVar("T")


class EmbeddingService:
    """Serves embedding requests for every model of a :class:`ModelRegistry`."""

    def __init__(self, settings: ServerSettings, registry: ModelRegistry, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.fetcher = SafeFetcher(settings.input_limits)
        self._workers = ThreadPoolExecutor(
            settings.cpu_workers,
            thread_name_prefix="uniembed-cpu",
            initializer=single_threaded_torch,
        )

    def close(self) -> None:
        """Stop the worker threads (after the last request)."""
        self._workers.shutdown(wait=True, cancel_futures=True)

    async def embed(self, body: EmbeddingRequest, request: Request) -> Response:
        """Answer one request; all its work stops when the client disconnects (499)."""
        model = self.registry.lookup(body.model)
        task = model.task_for(body.task)
        answer = await until_disconnected(self._embed(body, model, task), request)
        return Response(status_code=CLIENT_CLOSED_REQUEST) if answer is None else answer

    async def _embed(
        self, body: EmbeddingRequest, model: ServedModel, task: str | None
    ) -> Response:
        embedder = model.embedder
        options = self._options(body, embedder.info.max_tokens)
        embedder.check_options(options)  # option errors (422) before any input is read
        pending, _origin = await aprobe_api_items(
            body.raw_inputs(),
            self.settings.input_limits,
            self.fetcher,
            self.settings.request_budget(),
        )
        if all(isinstance(entry, TextItem) for entry in pending):
            result = await self._embed_texts(embedder, pending, task, options)  # type: ignore[arg-type]
        else:
            _check_late_chunking(pending, options)
            result = await self._embed_in_parts(embedder, pending, task, options)
        self.metrics.for_model(model.served).tokens.inc(result.total_tokens)
        light = _light_outputs(result, body.return_multivector)
        payload = await self._compute(light, _response_body, model.id, result, body)
        return Response(payload, media_type="application/json")

    async def _compute(self, inline: bool, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` here when ``inline`` (small work), else on a worker thread."""
        if inline:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, functools.partial(function, *args))

    # ----------------------------------------------------------------- texts: one plan
    async def _embed_texts(
        self, embedder: Embedder, items: list[TextItem], task: str | None, options: EncodeOptions
    ) -> EncodeResult:
        light = _light_texts(items)
        if not light:
            estimate = await self._compute(False, estimated_tokens, embedder, items, options)
            self._check_estimated_tokens(estimate)
        plan: Plan = await self._compute(light, self._plan_texts, embedder, items, task, options)
        outputs = await embedder.engine.arun(plan.rows)
        return await self._compute(_light_rows(outputs), plan.assemble, outputs)

    def _plan_texts(
        self, embedder: Embedder, items: list[TextItem], task: str | None, options: EncodeOptions
    ) -> Plan:
        """Tokenise in parts of :data:`PLAN_CHARS` characters, refusing as soon as the running
        total of tokens passes the budget (late chunking plans its one document at once)."""
        parts = [items] if options.late_chunking else list(_text_parts(items, PLAN_CHARS))
        plans, tokens, first = [], 0, 0
        for part in parts:
            plans.append(embedder.plan(part, task, options, first_index=first))
            tokens += _tokens(plans[-1])
            self._check_request_tokens(tokens)
            first += len(part)
        return _joined(plans)

    # ----------------------------------------------------------------- images and pages: in parts
    async def _embed_in_parts(
        self,
        embedder: Embedder,
        pending: Sequence[Pending],
        task: str | None,
        options: EncodeOptions,
    ) -> EncodeResult:
        """Decode, plan and queue parts one after another, at most PARTS_IN_FLIGHT queued at
        once."""
        stop = threading.Event()  # tells a part being decoded in a worker thread to stop
        queued: deque[tuple[Plan, Job]] = deque()
        results: list[EncodeResult] = []
        tokens = first = 0
        try:
            for part in in_parts(pending, PART_ITEMS, PART_PIXELS):
                plan = await self._compute(
                    False, self._plan_part, embedder, part, task, options, first, stop
                )
                tokens += _tokens(plan)
                self._check_request_tokens(tokens)
                queued.append((plan, embedder.engine.submit(plan.rows)))
                first += len(part)
                while len(queued) > PARTS_IN_FLIGHT:
                    results.append(await _finish(*queued.popleft()))
            while queued:
                results.append(await _finish(*queued.popleft()))
        finally:
            stop.set()
            for _, job in queued:  # left unfinished (an error or the client left): drop their rows
                embedder.engine.cancel(job)
        return _concatenate(results)

    def _plan_part(
        self,
        embedder: Embedder,
        part: list[Pending],
        task: str | None,
        options: EncodeOptions,
        first: int,
        stop: threading.Event,
    ) -> Plan:
        """Decode and render the part, then plan it an item at a time, stopping between items."""
        items = load_pending(part, self.settings.input_limits, stop)
        plans = []
        for offset, item in enumerate(items):
            if stop.is_set():
                raise CancelledError("the client left")
            plans.append(embedder.plan([item], task, options, first_index=first + offset))
        return _joined(plans)

    # ----------------------------------------------------------------- limits and options
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

    def _check_estimated_tokens(self, estimate: int) -> None:
        limit = self.settings.max_tokens_per_request
        if estimate > ESTIMATE_MARGIN * limit:
            raise InputTooLarge(
                f"request has about {estimate} tokens (estimated from its characters before "
                f"tokenising), more than the limit of {limit} per request "
                "(max_tokens_per_request); send fewer or shorter inputs"
            )

    def _check_request_tokens(self, total: int) -> None:
        limit = self.settings.max_tokens_per_request
        if total > limit:
            raise InputTooLarge(
                f"request has {total} tokens or more, more than the limit of {limit} per request "
                "(max_tokens_per_request); send fewer or shorter inputs"
            )


async def until_disconnected(work: Awaitable[T], request: Request) -> T | None:
    """The result of ``work``, or ``None`` once the client has disconnected (``work`` is then
    cancelled and awaited, so everything it started has stopped)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request itself is cancelled (shutdown)
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return task.result() if not task.cancelled() else None


async def _client_disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _finish(plan: Plan, job: Job) -> EncodeResult:
    return plan.assemble(await asyncio.wrap_future(job.future))


def _concatenate(results: Sequence[EncodeResult]) -> EncodeResult:
    """One result from the results of consecutive parts (single or multi output; never "both")."""
    return EncodeResult(
        embeddings=[e for result in results for e in result.embeddings],
        token_counts=[n for result in results for n in result.token_counts],
        patch_grids=[g for result in results for g in result.patch_grids],
    )


def _check_late_chunking(pending: Sequence[Pending], options: EncodeOptions) -> None:
    if options.late_chunking:
        first = next(entry for entry in pending if not isinstance(entry, TextItem))
        raise InvalidInput(f"input {first.origin}: late_chunking needs text inputs only")  # type: ignore[union-attr]


def estimated_tokens(embedder: Embedder, items: Sequence[TextItem], options: EncodeOptions) -> int:
    """The tokens ``items`` will come to, from their characters and the tokens per character of a
    sample of them (see :data:`SAMPLE_TEXTS`); with ``truncate`` an item counts at most its limit.
    Task prefixes and special tokens are left out (a few per item).
    """
    step = max(len(items) // SAMPLE_TEXTS, 1)
    slices = [piece for item in items[::step] for piece in _slices(item.text)]
    sample_chars = sum(len(piece) for piece in slices)
    if sample_chars == 0:
        return 0
    sample_tokens = sum(
        sum(not special for special in embedder.tokenize(piece).special) for piece in slices
    )
    per_char = sample_tokens / sample_chars
    cap = (options.max_tokens or embedder.info.max_tokens) if options.truncate else None
    estimates = (int(len(item.text) * per_char) for item in items)
    return sum(estimates if cap is None else (min(n, cap) for n in estimates))


def _slices(text: str) -> list[str]:
    """Up to :data:`SAMPLE_SLICES` slices of :data:`SAMPLE_CHARS` characters from the start, the
    middle and the end of ``text`` (the whole text when it is short).

    >>> [len(s) for s in _slices("x" * 2000)], _slices("short")
    ([512, 512, 512], ['short'])
    """
    if len(text) <= SAMPLE_SLICES * SAMPLE_CHARS:
        return [text]
    starts = (0, (len(text) - SAMPLE_CHARS) // 2, len(text) - SAMPLE_CHARS)
    return [text[start : start + SAMPLE_CHARS] for start in starts]


def _text_parts(items: Sequence[TextItem], max_chars: int) -> Iterator[list[TextItem]]:
    """Consecutive parts of ``items`` of about ``max_chars`` characters (at least one item each).

    >>> [len(p) for p in _text_parts([TextItem("ab"), TextItem("c"), TextItem("de")], 3)]
    [2, 1]
    """
    part: list[TextItem] = []
    chars = 0
    for item in items:
        if part and chars + len(item.text) > max_chars:
            yield part
            part, chars = [], 0
        part.append(item)
        chars += len(item.text)
    if part:
        yield part


def _joined(plans: Sequence[Plan]) -> Plan:
    """One plan with the rows of consecutive plans of one request."""
    return dataclasses.replace(plans[0], rows=tuple(row for plan in plans for row in plan.rows))


def _tokens(plan: Plan) -> int:
    return sum(row.num_tokens for row in plan.rows)


def _light_texts(items: Sequence[TextItem]) -> bool:
    """Little text: tokenising it costs less than handing it to a thread."""
    return sum(len(item.text) for item in items) <= INLINE_TEXT_CHARS


def _light_rows(outputs: Sequence[RowOutput]) -> bool:
    """Few single vectors: assembling them costs less than handing them to a thread."""
    return all(output.multivector is None for output in outputs) and (
        sum(output.pooled.numel() for output in outputs) <= INLINE_OUTPUT_FLOATS
    )


def _light_outputs(result: EncodeResult, multivector: bool) -> bool:
    """Few numbers to encode (single vectors of a few inputs), so encoding them inline is cheap."""
    return not multivector and sum(e.numel() for e in result.embeddings) <= INLINE_OUTPUT_FLOATS


def _response_body(model_id: str, result: EncodeResult, body: EmbeddingRequest) -> bytes:
    key = "embeddings" if body.return_multivector else "embedding"
    arrays = [as_float32(embedding) for embedding in result.embeddings]
    _check_finite(arrays)
    encoded = encode_all(arrays, body.kinds)
    document = {
        "model": model_id,
        "object": "list",
        "usage": {"total_tokens": result.total_tokens, "prompt_tokens": result.total_tokens},
        "data": [
            {"object": "embedding", "index": i, key: value} for i, value in enumerate(encoded)
        ],
    }
    # orjson writes the same shortest round-trip text for each float as json.dumps, ~15x faster
    # (2048 floats: 0.06 ms vs 1.1 ms), and that time is taken from the model's thread (the GIL).
    return orjson.dumps(document)


def _check_finite(arrays: Sequence[np.ndarray]) -> None:
    """JSON has no NaN or infinity; a model that produced them failed (a 500 naming the output)."""
    for index, array in enumerate(arrays):
        if not all_finite(array):
            raise BatchFailed(
                f"the model produced non-finite values (NaN or infinity) for output {index}; "
                "with float16 weights try --dtype bfloat16 or float32"
            )
