"""The distributed strategy on real ``dask scheduler`` / ``dask worker`` processes."""

from __future__ import annotations

import threading
import time

import pytest

import integration
from integration.config import ExecutionConfig, NodegraphConfig
from integration.graph import GraphValidationError
from integration.result import NodeState

pytestmark = pytest.mark.integration


def cluster_config(cluster) -> NodegraphConfig:
    return NodegraphConfig(execution=ExecutionConfig(dask_address=cluster.address))


def placement_graph(gpu_nodes: int = 4, cpu_nodes: int = 4) -> dict:
    nodes = [
        {"id": f"gpu{i}", "type": "testpack.on_gpu", "params": {"seconds": 0.3, "value": float(i)}}
        for i in range(gpu_nodes)
    ]
    nodes += [
        {
            "id": f"cpu{i}",
            "type": "testpack.where",
            "params": {"seconds": 0.3, "value": float(i), "spin": True},
        }
        for i in range(cpu_nodes)
    ]
    return {"name": "placement", "nodes": nodes}


def peak_overlap(intervals: list[dict]) -> int:
    events = sorted([(i["start"], 1) for i in intervals] + [(i["end"], -1) for i in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_gpu_nodes_run_only_where_a_gpu_is_advertised_one_at_a_time(registry, dask_cluster):
    result = integration.run(
        placement_graph(),
        registry=registry,
        config=cluster_config(dask_cluster),
        strategy="distributed",
        cache=False,
    )
    assert result.ok, result.errors
    gpu = [result.outputs[f"gpu{i}.out"] for i in range(4)]
    cpu = [result.outputs[f"cpu{i}.out"] for i in range(4)]
    assert {r["worker"] for r in gpu} == {"gpu-1"}
    assert peak_overlap(gpu) == 1  # the worker has 2 threads but one GPU
    assert {r["worker"] for r in cpu} == {"cpu-0", "gpu-1"}  # CPU work spreads


def test_distributed_results_equal_sequential(registry, dask_cluster, fixture_path):
    graph = fixture_path / "graphs" / "arithmetic.yaml"
    config = cluster_config(dask_cluster)
    local = integration.run(graph, registry=registry, strategy="sequential", cache=False)
    remote = integration.run(
        graph, registry=registry, config=config, strategy="distributed", cache=False
    )
    assert remote.ok and remote.outputs == local.outputs
    assert {r.state for r in remote.nodes.values()} == {NodeState.COMPLETED}
    assert all(r.task_run_id for r in remote.nodes.values())  # each node is a task run


def test_a_gpu_node_without_gpus_is_invalid_unless_a_cluster_offers_one(registry, dask_cluster):
    graph = {"name": "gpu-only", "nodes": [{"id": "g", "type": "testpack.on_gpu"}]}
    local = NodegraphConfig(execution=ExecutionConfig(gpus="off"))
    with pytest.raises(GraphValidationError) as caught:
        integration.run(graph, registry=registry, config=local, strategy="distributed")
    (problem,) = caught.value.problems
    assert problem.node_id == "g" and "needs GPU=1" in problem.message
    assert "no GPU was found here" in problem.message
    remote = integration.run(
        graph, registry=registry, config=cluster_config(dask_cluster), strategy="distributed"
    )
    assert remote.ok and remote.outputs["g.out"]["worker"] == "gpu-1"


def test_a_killed_worker_does_not_fail_the_run(registry, own_dask_cluster, tmp_path):
    started_log = tmp_path / "started.log"
    nodes = [
        {
            "id": f"n{i}",
            "type": "testpack.hang",
            "params": {"seconds": 1.5, "value": float(i), "log": str(started_log)},
        }
        for i in range(6)
    ]

    def kill_once_nodes_run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if started_log.exists() and len(started_log.read_text().split()) >= 3:
                own_dask_cluster.kill_worker("cpu-0")
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_nodes_run, daemon=True)
    killer.start()
    result = integration.run(
        {"name": "survivor", "nodes": nodes},
        registry=registry,
        config=cluster_config(own_dask_cluster),
        strategy="distributed",
    )
    killer.join(5)
    assert own_dask_cluster.workers["cpu-0"].poll() is not None  # it died mid-run
    assert result.ok, result.errors
    assert [result.outputs[f"n{i}.out"] for i in range(6)] == [float(i) for i in range(6)]


def test_a_broadcast_output_is_on_every_worker_before_its_consumers_run(registry, dask_cluster):
    nodes = [{"id": "w", "type": "testpack.weights"}]
    nodes += [{"id": f"use{i}", "type": "testpack.weigh", "params": {"value": i}} for i in range(4)]
    edges = [{"from": "w.out", "to": f"use{i}.w"} for i in range(4)]
    result = integration.run(
        {"name": "broadcast", "nodes": nodes, "edges": edges},
        registry=registry,
        config=cluster_config(dask_cluster),
        strategy="distributed",
        cache=False,
    )
    assert result.ok, result.errors
    assert [result.outputs[f"use{i}.out"] for i in range(4)] == [100_000 + i for i in range(4)]
    holders = result.extra["replicated_to"]["w"]
    assert len(holders) == 2  # both workers held the weights before any consumer ran
