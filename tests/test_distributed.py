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
    nodes = [
        {"id": f"n{i}", "type": "testpack.where", "params": {"seconds": 1.5, "value": float(i)}}
        for i in range(6)
    ]
    killer = threading.Timer(0.8, own_dask_cluster.kill_worker, args=("cpu-0",))
    started = time.monotonic()
    killer.start()
    try:
        result = integration.run(
            {"name": "survivor", "nodes": nodes},
            registry=registry,
            config=cluster_config(own_dask_cluster),
            strategy="distributed",
        )
    finally:
        killer.cancel()
    assert result.ok, result.errors
    assert own_dask_cluster.workers["cpu-0"].poll() is not None  # it really died
    assert [result.outputs[f"n{i}.out"]["value"] for i in range(6)] == [float(i) for i in range(6)]
    assert time.monotonic() - started < 60
