"""Submitting runs without waiting, watching them, and cancelling them part-way,
against the real Prefect server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import integration
from integration.config import ExecutionConfig, NodegraphConfig
from integration.prefect.submit import RunNotFound

pytestmark = pytest.mark.integration


def stamped_chain(log: Path, length: int = 8, seconds: float = 0.5) -> dict:
    nodes, edges = [], []
    for i in range(length):
        params = {"log": str(log), "offset": float(i + 1), "seconds": seconds}
        nodes.append({"id": f"n{i}", "type": "testpack.stamped", "params": params})
        if i:
            edges.append({"from": f"n{i - 1}.out", "to": f"n{i}.value"})
    return {"name": "stamped-chain", "nodes": nodes, "edges": edges}


def _events(log: Path, kind: str) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(row[1], float(row[2])) for row in rows if row[0] == kind]


def _wait_for(predicate, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_submitted_run_reports_progress_and_its_result(prefect_server, registry, tmp_path):
    log = tmp_path / "stamps.log"
    handle = integration.submit(stamped_chain(log, 3, 0.2), registry=registry)
    assert handle.id
    final = handle.wait(timeout=120)
    assert final.final and final.state == "COMPLETED"
    assert (final.nodes, final.done, final.failed, final.cached) == (3, 3, 0, 0)
    result = handle.result()
    assert result.ok and result.outputs == {"n2.out": 6.0}
    assert integration.status(handle.id) == final


@pytest.mark.parametrize(
    ("strategy", "processes"), [("sequential", False), ("parallel", False), ("parallel", True)]
)
def test_cancelling_part_way_stops_new_nodes_and_keeps_finished_ones(
    prefect_server, registry, tmp_path, strategy, processes
):
    log = tmp_path / "stamps.log"
    # Nodes far longer than a cancel check, so that a loaded server cannot blur them.
    graph = stamped_chain(log, seconds=1.0)
    config = NodegraphConfig(execution=ExecutionConfig(cancel_check_seconds=0.1))
    handle = integration.submit(
        graph, strategy=strategy, processes=processes, registry=registry, config=config
    )
    _wait_for(lambda: len(_events(log, "end")) >= 2)
    integration.cancel(handle.id)  # through the server only, as `nodegraph cancel` does
    cancelled_at = time.time()  # the server has it now

    final = handle.wait(timeout=60)
    assert final.state == "CANCELLED", final
    result = handle.result()
    assert result.state == integration.RunState.CANCELLED
    starts = _events(log, "start")
    # The run notices the cancel at its next check, or later while a loaded server is
    # slow to answer; from then on no node starts. The node running when it noticed
    # may finish (threads) or is killed (processes).
    noticed = result.extra["cancel_noticed_at"]
    assert cancelled_at - 1 < noticed < cancelled_at + 15
    assert not [t for _, t in starts if t > noticed + 0.05]
    ends = _events(log, "end")
    if processes:
        # The running node, if one was running, was killed: none finished afterwards.
        # (Under load the cancel may land between two nodes, with none running.)
        assert not [t for _, t in ends if t > noticed + 0.5], "the running node was killed"
        assert len(starts) - len(ends) in (0, 1)
    assert len(starts) < 8
    finished = {node for node, _ in ends}
    pending = [n for n, r in result.nodes.items() if r.state == integration.NodeState.PENDING]
    assert pending and all("cancelled" in result.nodes[n].reason for n in pending)
    assert final.done == 8 - len(pending)

    # A later run computes only what had not finished.
    before = len(_events(log, "start"))
    again = integration.run(graph, registry=registry, strategy=strategy, processes=processes)
    assert again.ok and again.outputs == {"n7.out": 36.0}
    rerun = {node for node, _ in _events(log, "start")[before:]}
    assert not rerun & finished
    assert len(rerun) == 8 - len(finished)


def test_status_and_cancel_name_a_missing_run(prefect_server):
    with pytest.raises(RunNotFound, match="no flow run"):
        integration.status("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound, match="not a flow run id"):
        integration.cancel("nope")
