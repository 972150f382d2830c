"""``uniembed serve --ray`` on two Ray nodes: a replica on each, one node lost while clients send
requests. Only requests in flight at the loss may fail, each with an HTTP error; every other one is
answered with the right vectors, and Serve starts the lost replica again on the node left."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.distributed.clusters import TwoNodes, two_node_cluster
from tests.helpers import embeddings
from uniembed.distributed import ServeScaling, serve_on_ray
from uniembed.server.settings import ServerSettings
from uniembed.testing.live import free_port

pytestmark = pytest.mark.slow  # two Ray nodes and model-loading replicas: about a minute

REPLICA = "SERVE_REPLICA::uniembed#"
CLIENTS = 4
PER_REPLICA = 2  # requests a replica takes at once (its max_concurrent_requests)
# long enough (~0.3 s on a replica) that requests are in flight on the node when it goes
BODY = {
    "model": "tiny-jina-v4-retrieval-query",
    "input": [" ".join(["solar wind grid battery"] * 60 + [str(i)]) for i in range(16)],
}


@dataclass
class Call:
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all (a dropped connection, a time-out)
    body: str


@pytest.fixture
def service(tiny_v4_path: Path) -> Iterator[tuple[TwoNodes, str]]:
    for nodes in two_node_cluster():
        from ray import serve

        settings = ServerSettings(
            models=(str(tiny_v4_path),),
            host="127.0.0.1",
            port=free_port(),
            device="cpu",
            torch_threads=1,
            cpu_workers=2,
            # the head's proxy prefers the replica on its own node; at 2 requests each, the
            # 4 clients keep both replicas busy
            max_concurrent_requests=PER_REPLICA,
        )
        # both nodes share this machine's address: one proxy, on the head (on separate machines
        # the default, a proxy on every node with a replica, is what clients should use)
        serve.start(
            proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port}
        )
        scaling = ServeScaling(replicas=2, health_check_period_s=1)
        serve_on_ray(settings, scaling, address="auto", blocking=False)
        try:
            yield nodes, f"http://{settings.host}:{settings.port}"
        finally:
            serve.shutdown()


def send_until(url: str, stop: threading.Event, calls: list[Call]) -> None:
    """One client: a request at a time until told to stop."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post(f"{url}/v1/embeddings", json=BODY)
                status, body = response.status_code, response.text
            except httpx.HTTPError as exc:
                status, body = 0, repr(exc)
            calls.append(Call(started, time.monotonic(), status, body))


def wait_for(condition: object, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_losing_a_node_fails_only_the_requests_in_flight_on_it(
    service: tuple[TwoNodes, str],
) -> None:
    nodes, url = service
    want = embeddings(url, BODY)
    assert nodes.actor_nodes(REPLICA) == sorted([nodes.head_id, nodes.worker_id])
    stop, calls = threading.Event(), []
    clients = [threading.Thread(target=send_until, args=(url, stop, calls)) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: len(calls) >= 20, "no answers before the loss")
        lost_at = time.monotonic()
        nodes.remove_worker()
        wait_for(
            lambda: nodes.actor_nodes(REPLICA) == [nodes.head_id] * 2,
            "the lost replica was not started again on the head node",
        )
        replaced_at = time.monotonic()
        answered = len(calls)
        wait_for(lambda: len(calls) >= answered + 20, "no answers after the replacement")
    finally:
        stop.set()
        for client in clients:
            client.join()
    failed = [c for c in calls if c.status != 200]
    assert len(failed) <= PER_REPLICA  # at most the requests in flight on the lost replica
    for call in failed:  # in flight on it, or handed to it before Serve saw it was gone
        assert call.started < replaced_at and call.ended > lost_at
        # Ray Serve's proxy answers them, without internals (uniembed's replica is gone)
        assert (call.status, call.body) == (500, "Internal Server Error")
    for call in calls:
        if call.status == 200:
            got = [np.asarray(row["embedding"], dtype=np.float32) for row in _data(call.body)]
            for a, b in zip(got, want, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # batched with others


def _data(body: str) -> list[dict[str, object]]:
    return httpx.Response(200, content=body).json()["data"]
