"""The service's thread policy: which threads run torch multi-threaded, and which work runs
where."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from uniembed.embedder import Embedder
from uniembed.engine.threads import call_on_temporary_thread, single_threaded_torch
from uniembed.inputs.items import Item, TextItem
from uniembed.models.base import Row, RowOutput
from uniembed.plans import EncodeOptions, EncodeResult, Plan
from uniembed.server import service
from uniembed.testing.fake import FakeModel


def test_call_on_temporary_thread_returns_from_another_thread_that_has_ended():
    seen: list[threading.Thread] = []

    def work(x: int) -> int:
        seen.append(threading.current_thread())
        return x * 2

    assert call_on_temporary_thread(work, 21) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_call_on_temporary_thread_reraises_here():
    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        call_on_temporary_thread(fail)


def test_helper_threads_run_torch_single_threaded_and_the_caller_keeps_its_count():
    before = torch.get_num_threads()
    with ThreadPoolExecutor(1, initializer=single_threaded_torch) as pool:
        assert pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("requested", [1, None])
def test_the_batch_worker_runs_torch_with_its_own_thread_count(requested):
    seen: list[int] = []

    class Recording(FakeModel):
        def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
            seen.append(torch.get_num_threads())
            return super().forward(batch)

    model = Recording()
    expected = requested or torch.get_num_threads()
    with ThreadPoolExecutor(1, initializer=single_threaded_torch) as pool:  # a helper ran first
        pool.submit(torch.get_num_threads).result()
    embedder = Embedder(model)
    embedder.engine.start(torch_threads=requested)
    try:
        rows = embedder.plan([TextItem("hello")]).rows
        assert len(embedder.engine.submit(rows).future.result(10)) == 1
    finally:
        embedder.engine.stop()
    assert seen == [expected]


ASSEMBLE_THREADS: list[str] = []


class ThreadRecordingPlan(Plan):
    """A plan that records the thread its outputs are assembled on."""

    def assemble(self, outputs: Sequence[RowOutput]) -> EncodeResult:
        ASSEMBLE_THREADS.append(threading.current_thread().name)
        return super().assemble(outputs)


class ThreadRecordingEmbedder(Embedder):
    """Records the thread of every ``plan`` call; its plans record where they are assembled."""

    def __init__(self) -> None:
        super().__init__(FakeModel(max_tokens=8192))
        self.plan_threads: list[str] = []
        ASSEMBLE_THREADS.clear()
        self.assemble_threads = ASSEMBLE_THREADS

    def plan(
        self,
        items: Sequence[Item],
        task=None,
        options: EncodeOptions | None = None,
        *,
        first_index: int = 0,
    ) -> Plan:
        self.plan_threads.append(threading.current_thread().name)
        plan = super().plan(items, task, options, first_index=first_index)
        return ThreadRecordingPlan(
            **{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
        )


def test_small_requests_are_prepared_on_the_event_loop_and_large_ones_on_helper_threads(serve):
    embedder = ThreadRecordingEmbedder()
    live = serve({"fake-model": embedder}, max_tokens_per_item=8192)
    long_text = "x" * (service.INLINE_TEXT_CHARS + 1)
    with httpx.Client(base_url=live.url, timeout=20) as http:
        small = http.post("/v1/embeddings", json={"input": ["a short text", "another"]})
        large = http.post("/v1/embeddings", json={"input": [long_text]})
        multi = http.post("/v1/embeddings", json={"input": ["short"], "return_multivector": True})
    assert small.status_code == large.status_code == multi.status_code == 200
    helper = [name.startswith("uniembed-cpu") for name in embedder.plan_threads]
    assert helper == [False, True, False]
    assert [name.startswith("uniembed-cpu") for name in embedder.assemble_threads] == [
        False,
        False,
        True,
    ]
    vectors = [np.asarray(d["embedding"], np.float32) for d in large.json()["data"]]
    assert np.array_equal(vectors[0], embedder.encode([long_text]).embeddings[0].numpy())


def test_light_work_thresholds():
    short, long_ = TextItem("a" * 10), TextItem("a" * service.INLINE_TEXT_CHARS)
    assert service._light_texts([short]) and not service._light_texts([short, long_])
    vector = RowOutput(pooled=torch.zeros(1, 2048))
    assert service._light_rows([vector] * 4) and not service._light_rows([vector] * 5)
    assert not service._light_rows(
        [RowOutput(pooled=torch.zeros(1, 8), multivector=torch.zeros(3, 8))]
    )
    result = EncodeResult(embeddings=[torch.zeros(2048)] * 4, token_counts=[1] * 4)
    assert service._light_outputs(result, multivector=False)
    assert not service._light_outputs(
        EncodeResult([torch.zeros(2048)] * 5, [1] * 5), multivector=False
    )
    assert not service._light_outputs(result, multivector=True)
