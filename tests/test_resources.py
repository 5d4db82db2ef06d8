"""Resource requirements: the model, GPU discovery without GPUs, the local pool, and
validation before a run."""

from __future__ import annotations

import threading
import time

import pytest

import integration
from integration.config import NodegraphConfig, ResourceManagementConfig
from integration.graph import GraphValidationError, bind, load_graph
from integration.resources import ResourcePool, ResourceRequirement, discover_gpus, local_capacity


def test_requirements_map_onto_dask_resources_and_merge():
    need = ResourceRequirement(cpu_cores=2, memory_mb=512, gpu_count=1)
    assert need.dask_resources() == {"CPU": 2.0, "MEMORY": 512e6, "GPU": 1.0}
    assert ResourceRequirement().empty
    own = ResourceRequirement(memory_mb=100)
    assert own.merged_over(ResourceRequirement(gpu_count=1, memory_mb=5)).amounts() == {
        "memory_mb": 100,
        "gpu_count": 1,
    }


def test_a_node_overrides_its_types_requirement(registry):
    graph = {
        "name": "r",
        "nodes": [{"id": "g", "type": "testpack.on_gpu", "resources": {"memory_mb": 64}}],
    }
    bound = bind(load_graph(graph), registry)
    assert bound.nodes["g"].resources.amounts() == {"gpu_count": 1, "memory_mb": 64}


def test_no_pynvml_or_no_driver_means_zero_gpus_never_a_crash(monkeypatch):
    import integration.resources.gpus as gpus

    monkeypatch.setattr(gpus, "_nvml", lambda: None)
    assert discover_gpus() == []

    class BrokenNvml:
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(gpus, "_nvml", lambda: BrokenNvml())
    assert discover_gpus() == []
    assert local_capacity()["gpu_count"] == 0


def test_the_pool_reserves_releases_and_waits():
    pool = ResourcePool({"cpu_cores": 2})
    one = ResourceRequirement(cpu_cores=1)
    assert pool.reserve(one) and pool.reserve(one) and not pool.can_schedule(one)
    threading.Timer(0.1, pool.release, args=(one,)).start()
    started = time.monotonic()
    assert pool.wait_for_resources(one, timeout=5)
    assert time.monotonic() - started >= 0.05
    assert not pool.wait_for_resources(one, timeout=0.05)
    assert pool.problems(ResourceRequirement(cpu_cores=3)) == ["cpu_cores: needs 3, the pool has 2"]
    with pytest.raises(ValueError, match="needs 3"):
        pool.wait_for_resources(ResourceRequirement(cpu_cores=3))


@pytest.mark.integration
def test_the_local_pool_never_runs_more_than_its_budget(prefect_server, registry):
    nodes = [
        {
            "id": f"n{i}",
            "type": "testpack.where",
            "params": {"seconds": 0.3, "value": float(i)},
            "resources": {"cpu_cores": 1},
        }
        for i in range(8)
    ]
    config = NodegraphConfig(resource_management=ResourceManagementConfig(cpu_cores=2))
    result = integration.run(
        {"name": "budget", "nodes": nodes},
        registry=registry,
        config=config,
        strategy="parallel",
        max_workers=8,
        cache=False,
    )
    assert result.ok
    intervals = [result.outputs[f"n{i}.out"] for i in range(8)]
    events = sorted([(i["start"], 1) for i in intervals] + [(i["end"], -1) for i in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2  # 8 nodes on 8 threads, but the budget holds two at a time


def test_a_node_needing_more_than_the_pool_is_invalid_before_running(registry):
    config = NodegraphConfig(resource_management=ResourceManagementConfig(cpu_cores=2, gpu_count=0))
    graph = {
        "name": "too-big",
        "nodes": [
            {"id": "big", "type": "testpack.where", "resources": {"cpu_cores": 4}},
            {"id": "gpu", "type": "testpack.on_gpu"},
        ],
    }
    with pytest.raises(GraphValidationError) as caught:
        integration.run(graph, registry=registry, config=config, strategy="parallel")
    problems = {p.node_id: p.message for p in caught.value.problems}
    assert problems["big"] == "cpu_cores: needs 4, the pool has 2"
    assert problems["gpu"].startswith("gpu_count: needs 1, the pool has 0")
    assert "no GPU was found here" in problems["gpu"] and "--address" in problems["gpu"]
    assert all(p.code == "insufficient_resources" for p in caught.value.problems)
