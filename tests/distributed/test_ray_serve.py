"""``uniembed serve --ray``: two Ray Serve replicas answer like ``uniembed serve`` and survive the
loss of one."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import embeddings, png_bytes
from uniembed.distributed import ServeScaling, serve_application, serve_on_ray
from uniembed.errors import InvalidInput
from uniembed.server.settings import ServerSettings
from uniembed.testing.live import ServeProcess, free_port

pytestmark = pytest.mark.slow  # a Ray cluster and model-loading replicas: about a minute

JINA = {
    "model": "tiny-jina-v4",
    "task": "retrieval.passage",
    "input": [
        "solar panels on a roof",
        {"image": base64.b64encode(png_bytes((9, 99, 199))).decode()},
    ],
}
OPENAI = {
    "model": "tiny-jina-v4-retrieval-query",
    "input": ["how do solar panels work", "wind"],
    "dimensions": 16,
}


@pytest.fixture(scope="module")
def ray_service(ray_cluster: Any, tiny_v4_path: Path) -> Iterator[str]:
    from ray import serve

    settings = ServerSettings(
        models=(str(tiny_v4_path),), port=free_port(), device="cpu", torch_threads=1, cpu_workers=2
    )
    serve_on_ray(
        settings, ServeScaling(replicas=2, health_check_period_s=1), address="auto", blocking=False
    )
    yield f"http://127.0.0.1:{settings.port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def local_service(tiny_v4_path: Path) -> Iterator[str]:
    process = ServeProcess("--model", str(tiny_v4_path), "--device", "cpu")
    yield process.url
    process.stop()


@pytest.mark.parametrize("body", [JINA, OPENAI], ids=["jina", "openai"])
def test_replicas_answer_with_the_vectors_of_uniembed_serve(
    ray_service: str, local_service: str, body: dict[str, Any]
) -> None:
    got, want = embeddings(ray_service, body), embeddings(local_service, body)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_errors_are_the_services_own(ray_service: str) -> None:
    response = httpx.post(
        f"{ray_service}/v1/embeddings", json={"model": "tiny-jina-v4", "input": []}, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] and "detail" in response.json()


def test_the_service_keeps_answering_when_a_replica_is_killed(
    ray_cluster: Any, ray_service: str
) -> None:
    before = replicas(ray_cluster)
    assert len(before) == 2
    ray_cluster.kill(ray_cluster.get_actor(before[0], namespace="serve"), no_restart=True)
    want = embeddings(ray_service, OPENAI)
    for _ in range(20):  # every request right after the loss is answered, by the other replica
        for a, b in zip(embeddings(ray_service, OPENAI), want):
            np.testing.assert_array_equal(a, b)
    deadline = time.monotonic() + 60
    while len(replicas(ray_cluster)) < 2 or before[0] in replicas(ray_cluster):  # Serve replaces it
        assert time.monotonic() < deadline, "the lost replica was not replaced"
        time.sleep(0.5)


def replicas(ray: Any) -> list[str]:
    """Names of the live replica actors of the application (a dead actor's name is released)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA::uniembed#")
    )


def test_scaling_settings_become_deployment_options() -> None:
    settings = ServerSettings(max_concurrent_requests=64)
    fixed = ServeScaling(replicas=3, gpus_per_replica=1).deployment_options(settings)
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {
        "num_cpus": 1.0,
        "num_gpus": 1,
    }
    assert fixed["max_ongoing_requests"] == 64 and "autoscaling_config" not in fixed
    scaled = ServeScaling(replicas=1, max_replicas=4, target_ongoing_requests=8).deployment_options(
        settings
    )
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8,
    }
    assert "num_replicas" not in scaled
    with pytest.raises(InvalidInput, match="below replicas"):
        ServeScaling(replicas=2, max_replicas=1)


def test_an_index_directory_is_refused_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(InvalidInput, match="belongs to one process"):
        serve_application(ServerSettings(index=str(tmp_path / "index")))
