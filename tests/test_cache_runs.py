"""Runs with the result cache: nothing is computed twice, against a real Prefect server."""

from __future__ import annotations

import json

import pytest
from prefect.results import ResultRecord

import integration
from integration.cache.envelope import unseal
from integration.cache.signing import resolve_key
from integration.cache.tiers import DiskTier
from integration.result import NodeState

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def chain(log, offsets=(1, 2, 3, 4), outputs=True):
    """n0 -> n1 -> n2 -> n3, each adding its offset, each logging its execution."""
    nodes, edges = [], []
    for i, offset in enumerate(offsets):
        params = {"log": str(log), "offset": offset}
        if i == 0:
            params["value"] = 0.0
        nodes.append({"id": f"n{i}", "type": "testpack.counted", "params": params})
        if i:
            edges.append({"from": f"n{i - 1}.out", "to": f"n{i}.value"})
    doc = {"name": "counted-chain", "nodes": nodes, "edges": edges}
    if outputs:
        doc["outputs"] = {"total": f"n{len(offsets) - 1}.out"}
    return doc


def executions(log):
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_a_second_identical_run_executes_nothing(registry, tmp_path, strategy):
    log = tmp_path / "executions.log"
    first = integration.run(chain(log), registry=registry, strategy=strategy)
    assert first.outputs == {"total": 10.0} and len(executions(log)) == 4
    second = integration.run(chain(log), registry=registry, strategy=strategy)
    assert second.ok and second.outputs == {"total": 10.0}
    assert len(executions(log)) == 4, "a cached node ran again"
    assert {r.state for r in second.nodes.values()} == {NodeState.CACHED}
    assert second.nodes["n3"].cache_tier == "memory"


def test_changing_one_param_reruns_exactly_that_node_and_its_descendants(registry, tmp_path):
    log = tmp_path / "executions.log"
    integration.run(chain(log), registry=registry)
    log.write_text("")
    changed = integration.run(chain(log, offsets=(1, 20, 3, 4)), registry=registry)
    assert changed.outputs == {"total": 28.0}
    assert executions(log) == ["1.0+20", "21.0+3", "24.0+4"]
    states = {n: r.state for n, r in changed.nodes.items()}
    assert states == {
        "n0": NodeState.CACHED,
        "n1": NodeState.COMPLETED,
        "n2": NodeState.COMPLETED,
        "n3": NodeState.COMPLETED,
    }


def test_a_fully_cached_graph_runs_no_task_and_loads_only_the_outputs(registry, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from integration.cache.factory import hierarchy_for
    from integration.config import load_config

    log = tmp_path / "executions.log"
    integration.run(chain(log), registry=registry)
    cache = hierarchy_for(load_config().caching)
    hits_before = sum(cache.hits.values())
    again = integration.run(chain(log), registry=registry)
    assert sum(cache.hits.values()) - hits_before == 1  # only n3, the requested output
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[again.flow_run_id]))
        )
    assert task_runs == []


def test_the_stored_record_sits_at_the_node_key(registry, tmp_path, _private_cache_dir):
    result = integration.run(chain(tmp_path / "log"), registry=registry)
    key = result.nodes["n2"].cache_key
    entry = DiskTier(_private_cache_dir).get(key)
    record = ResultRecord.deserialize(unseal(entry, resolve_key()))
    assert record.result.values == {"out": 6.0}
    assert record.metadata.storage_key == key


def test_identical_bodies_in_different_node_types_never_share_a_result(registry, tmp_path):
    log = tmp_path / "twins.log"
    doc = {
        "name": "twins",
        "nodes": [
            {"id": "a", "type": "testpack.twin_a", "params": {"x": 2.0, "log": str(log)}},
            {"id": "b", "type": "testpack.twin_b", "params": {"x": 2.0, "log": str(log)}},
        ],
    }
    result = integration.run(doc, registry=registry, strategy="sequential")
    assert result.nodes["a"].cache_key != result.nodes["b"].cache_key
    assert {r.state for r in result.nodes.values()} == {NodeState.COMPLETED}
    assert len(executions(log)) == 2


def test_identical_sub_chains_share_results(registry, tmp_path):
    log = tmp_path / "executions.log"
    doc = {
        "name": "shared",
        "nodes": [
            {
                "id": "left",
                "type": "testpack.counted",
                "params": {"log": str(log), "value": 1.0, "offset": 1.0},
            },
            {
                "id": "right",
                "type": "testpack.counted",
                "params": {"log": str(log), "value": 1.0, "offset": 1.0},
            },
        ],
    }
    integration.run(doc, registry=registry, strategy="sequential")
    assert len(executions(log)) == 1


def test_no_cache_and_refresh(registry, tmp_path):
    log = tmp_path / "executions.log"
    integration.run(chain(log), registry=registry)
    integration.run(chain(log), registry=registry, cache=False)
    assert len(executions(log)) == 8
    refreshed = integration.run(chain(log), registry=registry, refresh=True)
    assert len(executions(log)) == 12
    assert {r.state for r in refreshed.nodes.values()} == {NodeState.COMPLETED}


def test_cache_cli_stats_inspect_and_clear(registry, tmp_path, _private_cache_dir):
    from typer.testing import CliRunner

    from integration.cli.app import app

    runner = CliRunner()
    log = tmp_path / "executions.log"
    first = integration.run(chain(log), registry=registry)
    integration.run(chain(log), registry=registry)

    stats = json.loads(runner.invoke(app, ["cache", "stats", "--json"]).stdout)
    disk = next(t for t in stats["tiers"] if t["tier"] == "disk")
    assert disk["entries"] == 4 and disk["bytes"] > 0
    assert [(r["executed"], r["cached"]) for r in stats["runs"]] == [(4, 0), (0, 4)]
    assert stats["hit_rate"] == 0.5

    key = first.nodes["n1"].cache_key
    inspected = json.loads(runner.invoke(app, ["cache", "inspect", key, "--json"]).stdout)
    on_disk = next(t for t in inspected["tiers"] if t["tier"] == "disk")
    assert on_disk["present"] and on_disk["verified"]
    assert on_disk["metadata"]["storage_key"] == key

    path = _private_cache_dir / key[:2] / key
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    inspected = json.loads(runner.invoke(app, ["cache", "inspect", key, "--json"]).stdout)
    on_disk = next(t for t in inspected["tiers"] if t["tier"] == "disk")
    assert on_disk["verified"] is False and "checksum" in on_disk["problem"]

    assert runner.invoke(app, ["cache", "clear", "--tier", "disk"]).exit_code == 0
    stats = json.loads(runner.invoke(app, ["cache", "stats", "--json"]).stdout)
    assert next(t for t in stats["tiers"] if t["tier"] == "disk")["entries"] == 0
    missing = runner.invoke(app, ["cache", "inspect", "ff" * 32])
    assert missing.exit_code == 1


def test_a_corrupt_entry_is_recomputed_in_the_next_run(registry, tmp_path, _private_cache_dir):
    log = tmp_path / "executions.log"
    first = integration.run(chain(log), registry=registry, cache=True)
    key = first.nodes["n3"].cache_key
    path = _private_cache_dir / key[:2] / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    from integration.cache.factory import hierarchy_for
    from integration.config import load_config

    hierarchy_for(load_config().caching).clear("memory")  # only the disk copy remains
    log.write_text("")
    again = integration.run(chain(log), registry=registry)
    assert again.outputs == {"total": 10.0}
    assert executions(log) == ["6.0+4"]  # only the corrupt node ran again
    assert again.nodes["n3"].state == NodeState.COMPLETED
