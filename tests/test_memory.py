"""Outputs are released as soon as their last consumer has finished."""

from __future__ import annotations

import pytest

import integration

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_an_output_is_freed_once_its_last_consumer_finished(
    prefect_server, registry, tmp_path, strategy
):
    log = str(tmp_path / "blob.log")
    graph = {
        "name": "release",
        "nodes": [
            {"id": "blob", "type": "testpack.make_blob", "params": {"log": log}},
            {"id": "size", "type": "testpack.blob_size"},
            {"id": "check", "type": "testpack.was_freed", "params": {"log": log}},
        ],
        "edges": [
            {"from": "blob.out", "to": "size.blob"},
            {"from": "size.out", "to": "check.after"},
        ],
        "outputs": {"freed": "check.out", "size": "size.out"},
    }
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert result.ok, result.errors
    assert result.outputs == {"freed": True, "size": 1_000_000}


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_under_memory_pressure_outputs_spill_and_come_back_but_pinned_ones_stay(
    prefect_server, registry, strategy
):
    from integration.config import NodegraphConfig, ResourceManagementConfig

    graph = {
        "name": "spilling",
        "nodes": [
            {"id": "w", "type": "testpack.weights", "params": {"size": 200_000}},
            {"id": "use1", "type": "testpack.weigh", "params": {"value": 1}},
            {"id": "use2", "type": "testpack.weigh", "params": {"value": 2}},
            {
                "id": "kept",
                "type": "testpack.weights",
                "params": {"size": 1000},
                "overrides": {"pin_in_memory": True},
            },
            {"id": "use_kept", "type": "testpack.weigh"},
        ],
        "edges": [
            {"from": "w.out", "to": "use1.w"},
            {"from": "w.out", "to": "use2.w"},
            {"from": "kept.out", "to": "use_kept.w"},
        ],
    }
    # A 1 MB budget spilling at half of it: this process is always over it.
    tight = NodegraphConfig(
        resource_management=ResourceManagementConfig(memory_mb=1, offload_threshold=0.5)
    )
    result = integration.run(
        graph, registry=registry, config=tight, strategy=strategy, max_workers=1, cache=False
    )
    assert result.ok, result.errors
    assert result.outputs == {"use1.out": 200_001, "use2.out": 200_002, "use_kept.out": 1000}
    assert "w" in result.extra["spilled"]
    assert "kept" not in result.extra["spilled"]
