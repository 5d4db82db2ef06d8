"""A run killed with SIGKILL: the next run recomputes nothing that had finished, and
the killed run's Prefect flow run is marked Crashed instead of running for ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

import integration
from integration.runs import load_record, runs_folder

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def slow_chain(log: Path, length: int = 6) -> dict:
    nodes, edges = [], []
    for i in range(length):
        params = {"log": str(log), "offset": float(i + 1), "seconds": 0.4}
        if i == 0:
            params["value"] = 0.0
        nodes.append({"id": f"n{i}", "type": "testpack.slow_counted", "params": params})
        if i:
            edges.append({"from": f"n{i - 1}.out", "to": f"n{i}.value"})
    return {"name": "slow-chain", "nodes": nodes, "edges": edges}


def test_a_killed_run_is_resumed_by_the_next_and_marked_crashed(
    prefect_server, registry, tmp_path, _private_cache_dir
):
    log = tmp_path / "executions.log"
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(slow_chain(log)))
    child = subprocess.Popen(
        [sys.executable, str(FIXTURES / "crash_run.py"), str(graph_file), str(FIXTURES / "packs")],
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_lines(log)) < 2 and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    before = _lines(log)
    assert 2 <= len(before) < 6, "the run should have been killed part-way"

    result = integration.run(json.loads(graph_file.read_text()), registry=registry)
    assert result.ok
    after = _lines(log)[len(before) :]
    finished_before = {line.split()[1] for line in before[:-1]}  # the last may not have persisted
    assert not finished_before & {line.split()[1] for line in after}
    assert len(before) + len(after) in (6, 7)  # 7 when the last had not persisted

    # The killed run's record and flow run are marked crashed by the run that followed.
    folder = runs_folder(_private_cache_dir)
    killed = [
        record
        for record in (load_record(folder, path.stem) for path in folder.glob("*.json"))
        if record.pid == child.pid
    ]
    assert len(killed) == 1 and killed[0].state == "crashed"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(killed[0].run_id)).state
    assert state.is_crashed() and f"process {child.pid}" in state.message


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
