"""A real one-node Ray cluster per module, started by the tests (no external service); the
two-node cluster is in clusters.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    # 4 logical CPUs on any machine: two 1-CPU actors or replicas plus Serve's controller and proxy
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
