"""A ComfyUI prompt is a run like any other: it goes through the one flow body, so it is
recorded and resumed after ``kill -9`` without recomputing what finished, it emits
``nodegraph.node.*`` and ``nodegraph.graph.*`` events, and it feeds ``/metrics``, spans
and profiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prometheus_client.parser import text_string_to_metric_families

import integration
from integration.config import MonitoringConfig, NodegraphConfig
from integration.observability.metrics import serve_metrics
from integration.observability.tracing import TRACER_NAME
from integration.prefect.comfy import run_workflow
from integration.result import NodeState, RunState
from integration.runs import load_record, runs_folder
from tests.conftest import COMFY_TEST_PACK, FIXTURES, free_port
from tests.reliability.support import ROOT, assert_no_traceback, cli
from tests.support import executions, nodegraph_events, settled, wait_for_first_end

pytestmark = pytest.mark.integration

LAZY_MIX = FIXTURES / "comfy" / "lazy_mix_api.json"
"""Nodes 1, 3, 4 and 7 run; node 2 is a lazy input the mask never asks for."""
LAZY_MIX_RUN = {"1", "3", "4", "7"}

SLEEPER_PACK = '''
import os
import time


def _write(log, kind, value):
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{kind} {os.getpid()} {time.time()} {value}\\n")


class LoggedSleep:
    """Adds one to ``value`` after ``seconds``, logging its start and end."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 0.0, "min": -1000.0, "max": 1000.0}),
                "log": ("STRING", {"default": ""}),
                "seconds": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 60.0}),
            }
        }

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "step"
    CATEGORY = "Testing/Nodes"

    def step(self, value, log, seconds):
        _write(log, "start", value)
        time.sleep(seconds)
        _write(log, "end", value)
        return (value + 1.0,)


NODE_CLASS_MAPPINGS = {"LoggedSleep": LoggedSleep}
'''

WIDTH, LENGTH, SECONDS = 2, 3, 0.3
PERSIST_S = 0.15
"""A node that logged its end less than this before the kill may not be stored yet."""


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def _chains(log: Path) -> dict:
    """``WIDTH`` chains of ``LENGTH`` logged sleeps, each ending in a ``TestRecord``."""
    prompt: dict = {}
    for chain in range(WIDTH):
        for step in range(LENGTH):
            value = float(chain * 10) if step == 0 else [f"c{chain}s{step - 1}", 0]
            prompt[f"c{chain}s{step}"] = {
                "class_type": "LoggedSleep",
                "inputs": {"value": value, "log": str(log), "seconds": SECONDS},
            }
        prompt[f"out{chain}"] = {
            "class_type": "TestRecord",
            "inputs": {"value": [f"c{chain}s{LENGTH - 1}", 0]},
        }
    return prompt


def test_a_killed_prompt_resumes_without_recomputing_finished_nodes(tmp_path, _private_cache_dir):
    pack = tmp_path / "sleepers"
    pack.mkdir()
    (pack / "__init__.py").write_text(SLEEPER_PACK)
    packs = ["--nodes", str(pack), "--nodes", str(COMFY_TEST_PACK)]
    log = tmp_path / "executions.log"
    prompt_file = tmp_path / "chains_api.json"
    prompt_file.write_text(json.dumps(_chains(log)))
    out = (tmp_path / "run.out").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "integration.cli", "run", str(prompt_file),
         "--strategy", "sequential", *packs],
        stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for_first_end(log, child)
        time.sleep(0.2)  # the next node is mid-sleep
        assert child.poll() is None, (tmp_path / "run.out").read_text()[-3000:]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        killed_at = time.time()
    finally:
        out.close()
        if child.poll() is None:
            child.kill()
    before = settled(log)
    assert_no_traceback((tmp_path / "run.out").read_text())
    finished = {
        value for kind, _, at, value in before if kind == "end" and at < killed_at - PERSIST_S
    }
    ended = {value for kind, *_, value in before if kind == "end"}
    assert finished and len(ended) < WIDTH * LENGTH, "the run should be killed part-way"

    folder = runs_folder(_private_cache_dir)
    [record] = [
        r
        for r in (load_record(folder, p.stem) for p in folder.glob("*.json"))
        if r.pid == child.pid
    ]
    assert record.state == "running"  # as the kill left it; the resume marks it crashed
    resumed = cli("resume", record.run_id, "--json", *packs)
    assert_no_traceback(resumed.stdout, resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert report["outputs"] == {
        f"out{c}": {"values": [float(c * 10 + LENGTH)]} for c in range(WIDTH)
    }
    again = {value for kind, *_, value in executions(log)[len(before) :] if kind == "start"}
    assert not again & finished, "finished nodes were computed again"
    assert ended | again == {f"{float(c * 10 + s)}" for c in range(WIDTH) for s in range(LENGTH)}
    states = {node["node_id"]: node["state"] for node in report["nodes"]}
    ran = {f"{float(c * 10 + s)}": f"c{c}s{s}" for c in range(WIDTH) for s in range(LENGTH)}
    finished_ids = {ran[value] for value in finished}
    assert {states[n] for n in finished_ids} == {"cached"}
    assert load_record(folder, record.run_id).state == "crashed"


def test_a_prompt_emits_node_and_graph_events_and_is_recorded(registry, _private_cache_dir):
    result = integration.run(LAZY_MIX, registry=registry, cache=True)
    assert result.state == RunState.COMPLETED, result.errors
    assert set(result.nodes) == LAZY_MIX_RUN

    def complete(events: list) -> bool:
        node_events = [e for e in events if e.event.startswith("nodegraph.node.")]
        graph_events = [e for e in events if e.event.startswith("nodegraph.graph.")]
        return bool(graph_events) and len(node_events) >= len(LAZY_MIX_RUN)

    events = nodegraph_events(result.flow_run_id, complete)
    nodes = {
        e.resource["nodegraph.node"]: e for e in events if e.event.startswith("nodegraph.node.")
    }
    assert set(nodes) == LAZY_MIX_RUN
    assert {e.event for e in nodes.values()} == {"nodegraph.node.completed"}
    assert nodes["4"].resource["nodegraph.node.type"].endswith("TestLazyMixImages")
    [graph_event] = [e for e in events if e.event.startswith("nodegraph.graph.")]
    assert graph_event.event == "nodegraph.graph.completed"
    assert graph_event.payload["nodes"] == len(LAZY_MIX_RUN)
    # Recorded like a graph run: the record's document runs the same prompt again.
    record = load_record(runs_folder(_private_cache_dir), result.resume_id)
    assert record.state == "completed" and record.outputs == ["7"]
    again = integration.resume(record.run_id, registry=registry)
    assert again.outputs == result.outputs == {"7": {"values": [0.0]}}
    assert {r.state for r in again.nodes.values()} == {NodeState.CACHED}


def test_a_failed_prompt_ends_failed_with_a_resume_hint(registry, tmp_path):
    prompt = {
        "1": {"class_type": "StubMask", "inputs": {"value": 0.5}},
        "2": {"class_type": "TestFail", "inputs": {"value": ["1", 0], "message": "no good"}},
        "3": {"class_type": "TestRecord", "inputs": {"value": ["2", 0]}},
    }
    result = run_workflow(prompt, registry=registry, cache=True)  # what `run` calls
    assert result.state == RunState.FAILED
    assert result.nodes["2"].state == NodeState.FAILED
    assert result.nodes["3"].state == NodeState.UPSTREAM_FAILED
    assert result.resume_hint == f"nodegraph resume {result.resume_id}"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(result.flow_run_id).state.is_failed()
    prompt_file = tmp_path / "failing_api.json"
    prompt_file.write_text(json.dumps(prompt))
    ran = cli("run", str(prompt_file), "--nodes", str(COMFY_TEST_PACK))
    assert ran.returncode == 1, ran.stderr[-3000:]  # (Prefect logs the task's traceback)
    assert "nodegraph resume " in ran.stdout + ran.stderr


def _node_executions(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "node_executions_total"
    )


def test_a_prompt_feeds_metrics_spans_and_its_profile(registry, spans, _private_cache_dir):
    port = free_port()
    config = NodegraphConfig(
        monitoring=MonitoringConfig(metrics_port=port, trace_sampling_rate=1.0, profile=True)
    )
    serve_metrics(port)  # what the run does first; started here to read the count before
    before = _node_executions(port)
    spans.clear()
    result = integration.run(
        LAZY_MIX, registry=registry, config=config, strategy="parallel", cache=True
    )
    assert result.ok, result.errors
    assert _node_executions(port) - before == len(LAZY_MIX_RUN)
    ours = [s for s in spans.get_finished_spans() if s.instrumentation_scope.name == TRACER_NAME]
    [run_span] = [s for s in ours if s.name == f"run_graph {result.graph}"]
    node_spans = {s.attributes["node.id"]: s for s in ours if s.name.startswith("execute_node_")}
    assert set(node_spans) == LAZY_MIX_RUN
    assert all(s.parent.span_id == run_span.context.span_id for s in node_spans.values())
    profile = result.profile
    assert profile is not None
    rows = {row.node_id: row for row in profile.nodes}
    assert set(rows) == LAZY_MIX_RUN
    # Measured where the node ran: the instruments' requests reach ComfyUI workers.
    assert all(row.cpu_s is not None and row.output_bytes for row in rows.values())
    assert profile.critical_path[-1] == "7"
    record = load_record(runs_folder(_private_cache_dir), result.resume_id)
    assert record.extra["profile"]["critical_path"] == profile.critical_path
