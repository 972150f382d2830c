"""A real two-node Ray cluster (two raylets on this machine, each with its own resources) for the
tests of placement and node loss (a plain module tests import)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

MB = 1024 * 1024


@dataclass
class TwoNodes:
    """A head node with 2 CPUs (room for a second actor after a loss) and a worker with 1."""

    cluster: Any  # ray.cluster_utils.Cluster
    worker: Any  # the worker's node, for cluster.remove_node

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    @property
    def worker_id(self) -> str:
        return self.worker.node_id

    def actor_nodes(self, name: str) -> list[str]:
        """The node of every live actor whose class is ``name`` or whose actor name starts with
        it (Ray's actor table, read from the GCS)."""
        table = self.cluster.global_state.actor_table(None, actor_state_name="ALIVE")
        return sorted(
            a["Address"]["NodeID"]
            for a in table.values()
            if a["ActorClassName"] == name or a["Name"].startswith(name)
        )

    def actor_pids(self, class_name: str) -> set[int]:
        """The process ids of the live actors of a class."""
        table = self.cluster.global_state.actor_table(None, actor_state_name="ALIVE")
        return {a["Pid"] for a in table.values() if a["ActorClassName"] == class_name}

    def restarts(self, class_name: str) -> int:
        """How many times Ray restarted actors of a class, the dead ones included."""
        table = self.cluster.global_state.actor_table(None)
        return sum(a["NumRestarts"] for a in table.values() if a["ActorClassName"] == class_name)

    def remove_worker(self) -> None:
        """Kill the worker node's processes at once (SIGKILL: a crash, not a drain)."""
        self.cluster.remove_node(self.worker, allow_graceful=False)


def two_node_cluster() -> Iterator[TwoNodes]:
    """Start the two nodes, connect this process to them, and stop them after the test."""
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    from ray.cluster_utils import Cluster

    small = {"object_store_memory": 150 * MB}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            # a killed node is declared dead after 3 missed checks a second apart (default ~30 s)
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
            **small,
        },
    )
    try:
        worker = cluster.add_node(num_cpus=1, **small)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield TwoNodes(cluster, worker)
    finally:
        ray.shutdown()
        cluster.shutdown()
