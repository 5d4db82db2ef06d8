"""Two processes running the same graph at once compute each node once (with locking)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"


def run_twins(tmp_path, locking, redis_url=None):
    log = tmp_path / "executions.log"
    graph = {
        "name": "contended",
        "nodes": [
            {
                "id": f"n{i}",
                "type": "testpack.slow_counted",
                "params": {
                    "log": str(log),
                    "offset": i + 1,
                    # slow enough that the twins collide despite their start-up skew
                    "seconds": 2.5,
                    **({"value": 0.0} if i == 0 else {}),
                },
            }
            for i in range(3)
        ],
        "edges": [{"from": f"n{i}.out", "to": f"n{i + 1}.value"} for i in range(2)],
        "outputs": {"total": "n2.out"},
    }
    graph_path = tmp_path / "graph.json"
    graph_path.write_text(json.dumps(graph))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = [
        sys.executable,
        str(FIXTURES / "concurrent_run.py"),
        str(graph_path),
        str(FIXTURES / "packs"),
        str(barrier),
    ]
    extra = [redis_url] if redis_url else []
    processes = [
        subprocess.Popen(
            [*command, name, locking, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for name in ("first", "second")
    ]
    outcomes = [p.communicate(timeout=240) for p in processes]
    for process, (_, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err[-3000:]
    states = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    return log.read_text().splitlines(), states


def test_filesystem_locking_computes_each_node_once(prefect_server, tmp_path):
    executions, states = run_twins(tmp_path, "filesystem")
    assert len(executions) == 3, executions
    assert sorted(line.split()[1] for line in executions) == ["0.0+1", "1.0+2", "3.0+3"]
    all_states = [s for run in states for s in run.values()]
    assert all_states.count("completed") == 3 and all_states.count("cached") == 3


def test_redis_locking_computes_each_node_once(prefect_server, redis_server, tmp_path):
    executions, _ = run_twins(tmp_path, "redis", redis_server.url)
    assert len(executions) == 3, executions
