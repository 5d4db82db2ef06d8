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
