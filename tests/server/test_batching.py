"""Shared batches, disconnects, a full queue and failing batches, through a live server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import numpy as np

from uniembed.embedder import Embedder
from uniembed.errors import BatchFailed, NotReady
from uniembed.inputs.items import TextItem
from uniembed.testing.fake import FakeModel

TASKS = ["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_concurrent_mixed_requests_share_batches_and_equal_single_results(serve, gated):
    model = gated
    embedder = Embedder(model)
    requests = [{"input": [f"text {i}", f"more {i * 7}"], "task": TASKS[i % 5]} for i in range(64)]
    expected = [
        embedder.encode(r["input"], task=r["task"]).embeddings for r in requests
    ]  # inline, alone
    live = serve({"fake-model": embedder})
    engine = live.app.state.engines["fake-model"]
    model.forward_calls.clear()
    model.gate.clear()

    async def run_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            blocker = asyncio.create_task(
                http.post("/v1/embeddings", json={"input": "hold the worker"})
            )
            await asyncio.to_thread(model.entered.wait, 10)
            tasks = [asyncio.create_task(http.post("/v1/embeddings", json=r)) for r in requests]
            await asyncio.to_thread(wait_until, lambda: engine.queued_rows == 128)
            model.gate.set()
            return [await blocker, *[await t for t in tasks]]

    model.entered.clear()
    responses = asyncio.run(run_all())
    assert all(r.status_code == 200 for r in responses)
    for response, vectors in zip(responses[1:], expected):
        got = [np.asarray(d["embedding"], np.float32) for d in response.json()["data"]]
        assert all(np.array_equal(g, v.numpy()) for g, v in zip(got, vectors))
    assert model.forward_calls[0] == 1  # the blocker alone
    assert (
        sum(model.forward_calls[1:]) == 128 and len(model.forward_calls) == 3
    )  # 2 batches of 64 rows
    assert live.metric("uniembed_batch_size_count", model="fake-model") == 3


def test_a_client_that_disconnects_has_its_rows_dropped(serve, gated):
    model = gated
    live = serve({"fake-model": Embedder(model)})
    model.gate.clear()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        holder = threading.Thread(target=lambda: http.post("/v1/embeddings", json={"input": "x"}))
        holder.start()
        assert model.entered.wait(10)
        body = json.dumps({"input": ["gone " * 3, "away " * 5, "bye"]}).encode()
        with socket.create_connection(("127.0.0.1", live.port)) as raw:
            raw.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_until(lambda: live.app.state.engines["fake-model"].queued_rows == 3)
        wait_until(lambda: live.metric("uniembed_rows_dropped_total", model="fake-model") == 3)
        assert live.app.state.engines["fake-model"].queued_rows == 0
        model.gate.set()
        holder.join(10)
        assert http.post("/v1/embeddings", json={"input": "after"}).status_code == 200
    assert model.rows_seen == [
        10,
        14,
    ]  # "Query: x", "Query: after" + BOS/EOS; dropped rows never ran
    assert live.metric("uniembed_requests_total", path="/v1/embeddings", status="499") == 1


def test_a_full_queue_answers_429_with_retry_after(serve, gated):
    model = gated
    live = serve({"fake-model": Embedder(model)}, max_queue_rows=2)
    model.gate.clear()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            first = asyncio.create_task(http.post("/v1/embeddings", json={"input": "a"}))
            await asyncio.to_thread(model.entered.wait, 10)
            queued = asyncio.create_task(http.post("/v1/embeddings", json={"input": ["b", "c"]}))
            engine = live.app.state.engines["fake-model"]
            await asyncio.to_thread(wait_until, lambda: engine.queued_rows == 2)
            refused = await http.post("/v1/embeddings", json={"input": "d"})
            model.gate.set()
            return [refused, await first, await queued]

    refused, first, queued = asyncio.run(run())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "queued" in refused.json()["detail"]
    assert first.status_code == queued.status_code == 200
    assert live.metric("uniembed_requests_rejected_total", model="fake-model") == 1


def test_a_failing_batch_fails_its_requests_and_the_worker_lives_on(serve, gated):
    model = gated
    live = serve({"fake-model": Embedder(model)})
    model.gate.clear()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            first = asyncio.create_task(http.post("/v1/embeddings", json={"input": "a"}))
            await asyncio.to_thread(model.entered.wait, 10)
            model.fail_next = True  # the batch already entered fails
            model.gate.set()
            return [await first]

    (failed,) = asyncio.run(run())
    assert failed.status_code == 500
    assert "CUDA" not in failed.text and "cause is logged" in failed.json()["detail"]
    with httpx.Client(base_url=live.url) as http:
        assert http.post("/v1/embeddings", json={"input": "again"}).status_code == 200
        assert http.get("/ready").status_code == 200
    assert live.metric("uniembed_batch_failures_total", model="fake-model") == 1


def test_every_request_of_a_failing_shared_batch_gets_the_error(gated):
    model = gated
    embedder = Embedder(model)
    embedder.engine.start()
    engine = embedder.engine
    try:
        model.gate.clear()
        model.fail_batches_of = 2
        blocker = engine.submit(embedder.plan([TextItem("hold")]).rows)
        assert model.entered.wait(10)
        shared = [engine.submit(embedder.plan([TextItem(t)]).rows) for t in ("one", "two")]
        model.gate.set()
        assert len(blocker.future.result(10)) == 1
        for job in shared:
            error = job.future.exception(10)
            assert isinstance(error, BatchFailed) and "cause is logged" in error.message
        model.fail_batches_of = None
        assert len(engine.submit(embedder.plan([TextItem("ok")]).rows).future.result(10)) == 1
    finally:
        engine.stop()


def test_engine_arun_and_stop_fail_waiting_jobs_with_not_ready(gated):
    model = gated
    embedder = Embedder(model)
    engine = embedder.engine
    rows = embedder.plan([TextItem("abc"), TextItem("de")]).rows
    try:
        engine.submit(rows)
    except NotReady:
        pass
    else:
        raise AssertionError("a stopped engine must refuse work")
    engine.start()
    outputs = asyncio.run(engine.arun(rows))
    assert [o.pooled.shape for o in outputs] == [(1, 32), (1, 32)]
    assert np.array_equal(outputs[0].pooled, FakeModel().forward(rows)[0].pooled)
    model.gate.clear()
    model.entered.clear()
    running = engine.submit(rows)
    assert model.entered.wait(10)
    waiting = engine.submit(rows)
    stopper = threading.Thread(target=engine.stop)
    stopper.start()
    wait_until(lambda: waiting.finished)
    assert isinstance(waiting.future.exception(), NotReady)
    model.gate.set()
    stopper.join(10)
    assert running.future.result()[1].pooled.shape == (1, 32)
    assert not engine.is_running
