"""Two runs of one graph started at once, with the default configuration, compute each
node once, whatever they share (a disk folder, a Redis tier, an S3 tier); a node lock
left by a process that died is taken over; a lock folder that cannot be made costs a
warning, not the run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

import integration
from integration.cache.keys import graph_keys
from integration.config import load_config
from integration.prefect.flow import prepare
from tests.reliability.support import FIXTURES, PACKS, assert_no_traceback, cli

pytestmark = pytest.mark.integration

GRAPH = FIXTURES / "graphs" / "contended.yaml"
NODES = ["c0", "c1", "c2", "i0", "i1"]
OUTPUTS = {"met": True, "chain": 6.0, "first": 10.0, "second": 20.0}
WAITED = "waiting for its result"


def run_twins(tmp_path: Path, first: dict[str, str], second: dict[str, str] | None = None):
    """Start two ``concurrent_run.py`` processes, whose runs meet at their first node;
    return the executions they logged, their JSON reports and their stderr together."""
    log = tmp_path / "executions.log"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(FIXTURES / "concurrent_run.py"),
                str(GRAPH),
                str(tmp_path / "meet"),
                str(log),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for env in (first, second or first)
    ]
    outcomes = [p.communicate(timeout=180) for p in processes]
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert_no_traceback(out, err)
        assert process.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    return log.read_text().splitlines(), reports, "".join(err for _, err in outcomes)


def assert_each_node_once(executions: list[str], reports: list[dict]) -> None:
    """Each node executed once in all, completed in one run and cached in the other
    (found before it started, or read after waiting for the other run's lock)."""
    assert len(executions) == len(NODES), executions
    for node in NODES:
        assert sorted(r["states"][node] for r in reports) == ["cached", "completed"], reports
    assert reports[0]["outputs"] == reports[1]["outputs"] == OUTPUTS


def test_shared_disk_folder(prefect_server, tmp_path):
    # Both children inherit this test's NODEGRAPH_CACHE_DIR: one folder, file locks.
    executions, reports, _ = run_twins(tmp_path, {})
    assert_each_node_once(executions, reports)


def test_shared_redis_tier(prefect_server, redis_server, tmp_path):
    # Two "machines": each its own disk folder, one Redis tier. Lock files in their own
    # folders could not keep them apart: only the Redis locks (the default here) can.
    tier = {
        "NODEGRAPH_CACHING__CACHE_LEVELS": '["memory", "disk", "redis"]',
        "NODEGRAPH_CACHING__REDIS__URL": redis_server.url,
        "NODEGRAPH_CACHING__REDIS__PREFIX": f"twins-{uuid.uuid4().hex[:8]}:",
    }
    first = {**tier, "NODEGRAPH_CACHE_DIR": str(tmp_path / "cache-a")}
    second = {**tier, "NODEGRAPH_CACHE_DIR": str(tmp_path / "cache-b")}
    executions, reports, _ = run_twins(tmp_path, first, second)
    assert_each_node_once(executions, reports)


def test_shared_s3_tier_with_fused_nodes(prefect_server, moto_server, tmp_path):
    bucket = f"twins-{uuid.uuid4().hex[:8]}"
    moto_server.tier(bucket)
    env = {
        "NODEGRAPH_CACHING__CACHE_LEVELS": '["memory", "disk", "s3"]',
        "NODEGRAPH_CACHING__S3__BUCKET": bucket,
        "NODEGRAPH_CACHING__S3__ENDPOINT_URL": moto_server.endpoint,
        "NODEGRAPH_CACHING__S3__ACCESS_KEY_ID": "testing",
        "NODEGRAPH_CACHING__S3__SECRET_ACCESS_KEY": "testing",
        "NODEGRAPH_CACHING__S3__REGION": "eu-west-1",
        # Every node fusible: on the sequential strategy the graph is one shared task.
        "NODEGRAPH_EXECUTION__FUSION__MODE": "aggressive",
    }
    executions, reports, _ = run_twins(tmp_path, env)
    assert_each_node_once(executions, reports)
    assert any(r["shared_tasks"] for r in reports), reports


def _key_of(node: str, log: Path, registry) -> str:
    plan = prepare(GRAPH, registry=registry)
    return graph_keys(plan.graph, {"log": str(log), "meet": ""})[node].key


def _alone(tmp_path: Path) -> str:
    """A ``meet`` folder where the twin run has already been: a single run goes on."""
    folder = tmp_path / "meet"
    folder.mkdir()
    (folder / "absent-twin").touch()
    return str(folder)


def test_lock_of_a_killed_process_is_taken_over(
    prefect_server, registry, tmp_path, _private_cache_dir
):
    log = tmp_path / "executions.log"
    key = _key_of("c0", log, registry)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from integration.prefect.locking import LeasedFileLockManager\n"
         "locks = LeasedFileLockManager(Path(sys.argv[1]), lease_seconds=3600)\n"
         "locks.acquire_lock(sys.argv[2], 'killed-run')\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n",
         str(_private_cache_dir / ".locks"), key],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert (_private_cache_dir / ".locks" / f"{key}.lock").exists()

    inputs = ["-i", f"log={log}", "-i", f"meet={_alone(tmp_path)}"]
    done = cli("run", str(GRAPH), *inputs, "--nodes", str(PACKS), "--strategy", "sequential")
    assert_no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "taken over" in done.stderr and "is gone" in done.stderr, done.stderr[-3000:]
    assert len(log.read_text().splitlines()) == len(NODES)
    assert not (_private_cache_dir / ".locks" / f"{key}.lock").exists()


def test_expired_redis_lock_is_taken_over(prefect_server, redis_server, registry, tmp_path, caplog):
    log = tmp_path / "executions.log"
    prefix = f"stale-{uuid.uuid4().hex[:8]}:"
    key = _key_of("c0", log, registry)
    meet = tmp_path / "meet"
    meet.mkdir()

    def leave_a_stale_lock() -> None:
        # Once the run waits at its first node: the lock a holder killed after its last
        # renewal leaves, with 6 s of its lease left (long enough that a loaded machine
        # still reaches c0 before it runs out); then the run goes on to c0.
        deadline = time.monotonic() + 60
        while not any(meet.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        redis.Redis.from_url(redis_server.url).set(f"{prefix}lock:{key}", "killed", px=6000)
        (meet / "absent-twin").touch()

    threading.Thread(target=leave_a_stale_lock, daemon=True).start()
    config = load_config(
        environ={
            "NODEGRAPH_CACHE_DIR": os.environ["NODEGRAPH_CACHE_DIR"],
            "NODEGRAPH_CACHING__CACHE_LEVELS": '["memory", "disk", "redis"]',
            "NODEGRAPH_CACHING__REDIS__URL": redis_server.url,
            "NODEGRAPH_CACHING__REDIS__PREFIX": prefix,
        }
    )
    with caplog.at_level(logging.INFO, logger="nodegraph.lock"):
        result = integration.run(
            GRAPH,
            inputs={"log": str(log), "meet": str(meet)},
            registry=registry,
            config=config,
            strategy="sequential",
        )
    assert result.ok and result.outputs == OUTPUTS
    assert all(r.state == "completed" for r in result.nodes.values())
    assert any(WAITED in r.getMessage() for r in caplog.records), caplog.text
    assert len(log.read_text().splitlines()) == len(NODES)


def test_unusable_lock_folder_costs_one_warning(prefect_server, registry, tmp_path, caplog):
    log = tmp_path / "executions.log"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = load_config(
        environ={
            "NODEGRAPH_CACHE_DIR": os.environ["NODEGRAPH_CACHE_DIR"],
            "NODEGRAPH_CACHING__LOCK_DIRECTORY": str(blocker / "locks"),
        }
    )
    with caplog.at_level(logging.WARNING, logger="nodegraph.lock"):
        result = integration.run(
            GRAPH,
            inputs={"log": str(log), "meet": _alone(tmp_path)},
            registry=registry,
            config=config,
            strategy="sequential",
        )
    assert result.ok and result.outputs == OUTPUTS
    warnings = [r for r in caplog.records if "lock folder" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert str(blocker / "locks") in warnings[0].getMessage()
