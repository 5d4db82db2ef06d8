"""``kill -9`` of a ``nodegraph run`` mid-run, then ``nodegraph resume``: no finished node
is computed again, nothing is lost, nothing is printed as a traceback, every process the
run started is gone within seconds, and no node starts after the kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import integration
from integration.runs import load_record, runs_folder
from tests.reliability.support import PACKS, ROOT, alive, assert_no_traceback, cli, descendants
from tests.support import executions, settled, wait_for_first_end

pytestmark = pytest.mark.integration

WIDTH, LENGTH, SECONDS = 3, 3, 0.3
"""Three chains of three 0.3 s nodes: on two workers one ready node always waits in the
pool's queue, which is where orphaned workers used to pick up work after the kill."""

PERSIST_S = 0.15
"""A node that logged its end less than this before the kill may not have persisted its
result yet: it may run again."""

START_SLACK_S = 0.05
"""A worker notices its parent's death within milliseconds, not at the same instant."""


def chains(log: Path, timeout_chain: bool = False) -> dict:
    """``WIDTH`` chains of ``LENGTH`` nodes. With ``timeout_chain`` the first chain's
    nodes have a timeout: on processes each then runs in a child of its pool worker."""
    nodes, edges, outputs = [], [], {}
    for chain in range(WIDTH):
        for step in range(LENGTH):
            node_id = f"c{chain}s{step}"
            params = {"log": str(log), "offset": 1.0, "seconds": SECONDS}
            if step == 0:
                params["value"] = float(chain * 10)
            else:
                edges.append({"from": f"c{chain}s{step - 1}.out", "to": f"{node_id}.value"})
            node = {"id": node_id, "type": "testpack.timed_step", "params": params}
            if timeout_chain and chain == 0:
                node["on_error"] = {"timeout_seconds": 60}
            nodes.append(node)
        outputs[f"chain{chain}"] = f"c{chain}s{LENGTH - 1}.out"
    return {"name": "kill-me", "nodes": nodes, "edges": edges, "outputs": outputs}


STRATEGIES = {
    "sequential": ["--strategy", "sequential"],
    "threads": ["--strategy", "parallel", "--threads", "--max-workers", "2"],
    "processes": ["--strategy", "parallel", "--processes", "--max-workers", "2"],
    "local-dask": ["--strategy", "distributed", "--max-workers", "2"],
    "dask-address": ["--strategy", "distributed"],
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_killed_run_leaves_no_process_behind_and_resumes_without_recomputing(
    strategy, request, prefect_server, registry, tmp_path, _private_cache_dir
):
    args = list(STRATEGIES[strategy])
    cluster = None
    if strategy == "dask-address":
        cluster = request.getfixturevalue("dask_cluster")
        args += ["--address", cluster.address]
    log = tmp_path / "executions.log"
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(chains(log, timeout_chain=strategy == "processes")))
    out = (tmp_path / "run.out").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "integration.cli", "run", str(graph_file), *args,
         "--nodes", str(PACKS)],
        stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for_first_end(log, child)
        time.sleep(0.2)  # between two rounds of nodes: the next ones are mid-sleep
        assert child.poll() is None, (tmp_path / "run.out").read_text()[-3000:]
        started = descendants(child.pid)
        if strategy in ("processes", "local-dask"):
            assert len(started) >= 2, "the run's worker processes should be running"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        killed_at = time.time()
    finally:
        out.close()
        if child.poll() is None:
            child.kill()

    # Generous for a loaded machine: an orphan lives on for minutes.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in started):
        time.sleep(0.05)
    assert not [pid for pid in started if alive(pid)], "processes outlived the killed run"
    if cluster is not None:  # a cluster the user started is not the run's to stop
        assert all(worker.poll() is None for worker in cluster.workers.values())

    before = settled(log)  # a node left running, or started late, logs meanwhile
    assert_no_traceback((tmp_path / "run.out").read_text())
    if cluster is None:
        # (The user's workers finish what they were running, and may start a node
        # whose producer finished as the client went: the scheduler decides.)
        late = [row for row in before if row[2] > killed_at + START_SLACK_S]
        assert not late, f"nodes ran on after the kill: {late}"
    finished = {
        name for kind, _, at, name in before if kind == "end" and at < killed_at - PERSIST_S
    }
    ended = {name for kind, *_, name in before if kind == "end"}
    assert finished and len(ended) < WIDTH * LENGTH, "the run should be killed part-way"

    record = next(
        record
        for record in (load_record(runs_folder(_private_cache_dir), p.stem)
                       for p in runs_folder(_private_cache_dir).glob("*.json"))
        if record.pid == child.pid
    )  # fmt: skip
    if strategy == "sequential":  # the command once; in this process otherwise (faster)
        resumed = cli("resume", record.run_id, "--json", "--nodes", str(PACKS))
        assert_no_traceback(resumed.stdout, resumed.stderr)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        outputs = json.loads(resumed.stdout)["outputs"]
    else:
        result = integration.resume(record.run_id, strategy="parallel", registry=registry)
        assert result.ok, result.errors
        outputs = result.outputs
    assert outputs == {f"chain{c}": float(c * 10 + LENGTH) for c in range(WIDTH)}
    again = {name for kind, *_, name in executions(log)[len(before) :] if kind == "start"}
    assert not again & finished, "finished nodes were computed again"
    assert ended | again == {f"{c * 10 + s:.1f}+1.0" for c in range(WIDTH) for s in range(LENGTH)}
