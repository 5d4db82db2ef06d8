"""A Dask worker killed with ``kill -9`` while it runs nodes: the run completes with the
right outputs, only the nodes that were running there run again, and the run's report
says so (attempts and a note naming the lost worker)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import distributed
import pytest
from rich.console import Console

import integration
from integration.cli import render
from integration.config import ExecutionConfig, NodegraphConfig
from integration.result import NodeReport, NodeState, RunResult
from integration.runs import load_record, runs_folder

pytestmark = pytest.mark.integration

NODES = 4
"""Two workers of two threads: every node starts at once, two on each worker."""


def test_nodes_recovered_from_a_killed_worker_say_so(
    registry, own_dask_cluster, tmp_path, _private_cache_dir
):
    log = tmp_path / "executions.log"
    nodes = [
        {
            "id": f"n{i}",
            "type": "testpack.timed_step",
            "params": {"log": str(log), "value": float(i), "offset": 1.0, "seconds": 0.6},
        }
        for i in range(NODES)
    ]
    with distributed.Client(own_dask_cluster.address, set_as_default=False) as client:
        address_of = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
    pid_of = {name: process.pid for name, process in own_dask_cluster.workers.items()}
    killed: list[str] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = [line.split() for line in _lines(log)]
            if lines:  # the first node started: its worker is busy for 0.6 s
                time.sleep(0.1)  # the other nodes start too
                busy = [name for name, pid in pid_of.items() if str(pid) == lines[0][1]]
                own_dask_cluster.kill_worker(busy[0])
                killed.extend(busy)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    result = integration.run(
        {"name": "lost-worker", "nodes": nodes},
        registry=registry,
        config=NodegraphConfig(execution=ExecutionConfig(dask_address=own_dask_cluster.address)),
        strategy="distributed",
    )
    killer.join(5)
    assert killed and own_dask_cluster.workers[killed[0]].poll() is not None
    assert result.ok, result.errors
    assert [result.outputs[f"n{i}.out"] for i in range(NODES)] == [i + 1.0 for i in range(NODES)]

    dead_pid = str(pid_of[killed[0]])
    lines = [line.split() for line in _lines(log)]
    on_dead = {name for kind, pid, _, name in lines if kind == "start" and pid == dead_pid}
    on_dead -= {name for kind, pid, _, name in lines if kind == "end" and pid == dead_pid}
    starts = Counter(name for kind, *_, name in lines if kind == "start")
    ran_again = {name for name, count in starts.items() if count > 1}
    assert on_dead and ran_again == on_dead  # only what ran on the lost worker ran again
    for i in range(NODES):
        report = result.nodes[f"n{i}"]
        assert report.state == NodeState.COMPLETED
        if f"{float(i)}+1.0" in on_dead:
            lost = address_of[killed[0]]
            assert report.attempts == 2 and report.lost_workers == [lost]
            assert report.reason == f"recovered from a lost worker {lost}"
            assert report.to_dict()["lost_workers"] == [lost]
        else:
            assert report.attempts == 1 and not report.lost_workers and report.reason is None
    record = load_record(runs_folder(_private_cache_dir), result.resume_id)
    recorded = {n for n, entry in record.extra["nodes"].items() if entry.get("lost_workers")}
    assert recorded == {f"n{int(float(name.split('+')[0]))}" for name in on_dead}


def test_the_summary_shows_a_recovered_node():
    report = NodeReport("n0", "testpack.timed_step", NodeState.COMPLETED, 0.6, attempts=1)
    report.recovered_from(["tcp://127.0.0.1:4321"])
    console = Console(width=200, record=True)
    render.run_summary(console, RunResult("g", "completed", {}, {"n0": report}))
    assert "recovered from a lost worker tcp://127.0.0.1:4321" in console.export_text()
    assert report.attempts == 2


def _lines(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
