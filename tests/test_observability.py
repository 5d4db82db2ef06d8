"""Prometheus metrics on a real /metrics endpoint, OpenTelemetry spans, profiles and
progress, on every strategy including real Dask processes."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import integration
from integration.cli import app as cli
from integration.config import ExecutionConfig, MonitoringConfig, NodegraphConfig
from integration.observability.metrics import serve_metrics
from integration.observability.tracing import TRACER_NAME
from integration.result import NodeState
from tests.conftest import free_port

pytestmark = pytest.mark.integration

FAN = {
    "name": "fan",
    "nodes": [
        {"id": "slow", "type": "testpack.sleep", "params": {"seconds": 1.0, "value": 1}},
        *({"id": f"leaf{i}", "type": "core.add", "params": {"b": i}} for i in range(5)),
        {"id": "last", "type": "core.add", "params": {"b": 0}},
    ],
    "edges": [
        *({"from": "slow.out", "to": f"leaf{i}.a"} for i in range(5)),
        {"from": "leaf4.out", "to": "last.a"},
    ],
    # Every node is needed by an output, so every node runs.
    "outputs": {"out": "last.out", **{f"leaf{i}": f"leaf{i}.out" for i in range(4)}},
}


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _total(samples, name: str, **labels) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


@pytest.mark.parametrize("strategy", ["parallel", "distributed"])
def test_metrics_endpoint_counts_every_node(registry, dask_cluster, strategy):
    port = free_port()
    config = NodegraphConfig(
        execution=ExecutionConfig(
            dask_address=dask_cluster.address if strategy == "distributed" else None
        ),
        monitoring=MonitoringConfig(metrics_port=port),
    )
    in_flight: list[float] = []
    before: dict = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                samples = _scrape(port)
            except OSError:
                time.sleep(0.05)
                continue
            in_flight.append(_total(samples, "nodes_in_flight"))
            time.sleep(0.1)

    serve_metrics(port)  # what the run does first; started here to read the counts before
    before = _scrape(port)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = integration.run(
            FAN, registry=registry, config=config, strategy=strategy, cache=False
        )
    finally:
        done.set()
        watcher.join()
    assert result.ok, result.errors
    after = _scrape(port)
    ran = len(result.nodes)
    delta = _total(after, "node_executions_total") - _total(before, "node_executions_total")
    assert delta == ran == 7
    completed = _total(after, "node_executions_total", node_type="core.add", status="completed")
    assert (
        completed
        - _total(before, "node_executions_total", node_type="core.add", status="completed")
        == 6
    )
    durations = _total(after, "node_execution_duration_seconds_count") - _total(
        before, "node_execution_duration_seconds_count"
    )
    assert durations == ran
    assert max(in_flight) >= 1  # seen during the run, through the real endpoint
    assert _total(after, "nodes_in_flight") == 0
    assert ("resource_usage_percent", (("resource_type", "cpu"),)) in after
    assert ("resource_usage_percent", (("resource_type", "memory"),)) in after


def test_cache_metrics(registry):
    port = free_port()
    config = NodegraphConfig(monitoring=MonitoringConfig(metrics_port=port))
    graph = {
        **FAN,
        "nodes": [
            {**n, "params": {**n["params"], "seconds": 0.0}} if n["id"] == "slow" else n
            for n in FAN["nodes"]
        ],
    }
    serve_metrics(port)
    integration.run(graph, registry=registry, config=config, cache=True)
    before = _scrape(port)
    again = integration.run(graph, registry=registry, config=config, cache=True)
    after = _scrape(port)
    assert all(r.state == NodeState.CACHED for r in again.nodes.values() if r.node_id == "last")
    hits = _total(after, "cache_hits_total") - _total(before, "cache_hits_total")
    assert hits == sum(1 for r in again.nodes.values() if r.state == NodeState.CACHED) >= 1
    assert _total(after, "cache_read_bytes_total") > _total(before, "cache_read_bytes_total")
    assert _total(after, "cache_written_bytes_total") > 0


def _nodegraph_spans(exporter: InMemorySpanExporter) -> list:
    return [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == TRACER_NAME]


@pytest.mark.parametrize("strategy", ["sequential", "distributed"])
def test_spans_form_a_tree_per_run(registry, dask_cluster, spans, strategy):
    spans.clear()
    graph = {
        "name": "traced",
        "nodes": [
            {"id": "a", "type": "core.add", "params": {"a": 1, "b": 2}},
            {"id": "who", "type": "testpack.trace_parent", "params": {}},
            {"id": "bad", "type": "testpack.fail", "params": {"message": "nope"}},
        ],
        "edges": [{"from": "a.out", "to": "who.value"}],
        "outputs": {"parent": "who.out", "bad": "bad.out"},
    }
    config = NodegraphConfig(
        execution=ExecutionConfig(
            dask_address=dask_cluster.address if strategy == "distributed" else None
        ),
        monitoring=MonitoringConfig(trace_sampling_rate=1.0),
    )
    result = integration.run(
        graph, registry=registry, config=config, strategy=strategy, cache=False
    )
    found = _nodegraph_spans(spans)
    runs = [s for s in found if s.name == "run_graph traced"]
    assert len(runs) == 1
    run = runs[0]
    nodes = {s.attributes["node.id"]: s for s in found if s.name.startswith("execute_node_")}
    assert set(nodes) == {"a", "who", "bad"}
    for node_id, span in nodes.items():
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert span.attributes["execution.id"] == result.flow_run_id
        assert span.attributes["node.type"] == result.nodes[node_id].node_type
    assert nodes["a"].name == "execute_node_core.add"
    assert nodes["a"].attributes["cache.hit"] is False
    assert nodes["a"].attributes["retry.attempt"] == 1
    bad = nodes["bad"]
    assert bad.status.status_code.name == "ERROR"
    assert any(
        e.name == "exception" and "nope" in e.attributes["exception.message"] for e in bad.events
    )
    assert run.status.status_code.name == "ERROR"
    # The node span's context reached the worker (a Dask worker process, distributed).
    assert result.outputs["parent"] == format(nodes["who"].context.span_id, "016x")


def test_sampling_rate_zero_traces_nothing(registry, spans):
    spans.clear()
    config = NodegraphConfig(monitoring=MonitoringConfig(trace_sampling_rate=0.0))
    graph = {
        "name": "untraced",
        "nodes": [{"id": "a", "type": "core.add", "params": {"a": 1, "b": 1}}],
        "outputs": {"o": "a.out"},
    }
    assert integration.run(graph, registry=registry, config=config, cache=False).ok
    assert _nodegraph_spans(spans) == []


def test_cached_nodes_have_cache_spans(registry, spans):
    config = NodegraphConfig(monitoring=MonitoringConfig(trace_sampling_rate=1.0))
    graph = {
        "name": "twice",
        "nodes": [{"id": "a", "type": "core.add", "params": {"a": 1, "b": 1}}],
        "outputs": {"o": "a.out"},
    }
    integration.run(graph, registry=registry, config=config, cache=True)
    spans.clear()
    integration.run(graph, registry=registry, config=config, cache=True)
    (node,) = [s for s in _nodegraph_spans(spans) if s.name.startswith("execute_node_")]
    assert node.attributes["cache.hit"] is True and node.attributes["cache.tier"] == "memory"


@pytest.mark.parametrize("strategy", ["sequential", "processes"])
def test_profile_reports_costs_and_the_critical_path(registry, strategy):
    graph = {
        "name": "diamond",
        "nodes": [
            {"id": "start", "type": "testpack.pid", "params": {"value": 1}},
            {"id": "slow", "type": "testpack.sleep", "params": {"seconds": 0.3}},
            {"id": "big", "type": "testpack.allocate", "params": {"size": 2_000_000}},
            {"id": "join", "type": "core.add", "params": {}},
        ],
        "edges": [
            {"from": "start.out", "to": "slow.value"},
            {"from": "start.out", "to": "big.value"},
            {"from": "slow.out", "to": "join.a"},
            {"from": "big.out", "to": "join.b"},
        ],
        "outputs": {"out": "join.out"},
    }
    config = NodegraphConfig(monitoring=MonitoringConfig(profile=True))
    options = {"strategy": "parallel", "processes": True} if strategy == "processes" else {}
    result = integration.run(graph, registry=registry, config=config, cache=True, **options)
    profile = result.profile
    assert profile.critical_path == ["start", "slow", "join"]
    assert profile.critical_path_s >= 0.3
    assert profile.top_time[0] == "slow"
    assert profile.top_memory[0] == "big"
    rows = {row.node_id: row for row in profile.nodes}
    assert rows["big"].peak_memory_bytes >= 16_000_000  # 2e6 list slots of 8 bytes
    assert rows["slow"].cpu_s < 0.1 < rows["slow"].wall_s  # asleep, not computing
    assert rows["join"].output_bytes > 0 and rows["join"].cache == "miss"
    assert rows["join"].cache_written_bytes == rows["join"].output_bytes

    again = integration.run(graph, registry=registry, config=config, cache=True, **options)
    rows = {row.node_id: row for row in again.profile.nodes}
    assert rows["join"].cache.startswith("hit:") and rows["join"].cache_read_bytes > 0


def test_cli_profile_flag_and_profile_command(registry, tmp_path):
    runner = CliRunner()
    graph = tmp_path / "g.json"
    graph.write_text(
        json.dumps(
            {
                "name": "p",
                "nodes": [{"id": "a", "type": "core.add", "params": {"a": 1, "b": 2}}],
                "outputs": {"o": "a.out"},
            }
        )
    )
    outcome = runner.invoke(cli.app, ["run", str(graph), "--profile", "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output.strip().splitlines()[-1])
    assert report["profile"]["critical_path"] == ["a"]
    shown = runner.invoke(cli.app, ["profile", report["flow_run_id"]])
    assert shown.exit_code == 0, shown.output
    assert "critical path" in shown.output and "a" in shown.output
    plain = runner.invoke(cli.app, ["run", str(graph), "--no-cache", "--json"])
    run_id = json.loads(plain.output.strip().splitlines()[-1])["flow_run_id"]
    missing = runner.invoke(cli.app, ["profile", run_id])
    assert missing.exit_code == 1


def test_progress_hooks_see_starts_and_node_progress(registry):
    started: list[str] = []
    progress: list[tuple] = []
    graph = {
        "name": "prog",
        "nodes": [
            {"id": "a", "type": "core.add", "params": {"a": 1, "b": 2}},
            {"id": "p", "type": "testpack.report_progress", "params": {"steps": 4}},
        ],
        "outputs": {"o": "p.out", "a": "a.out"},
    }
    result = integration.run(
        graph,
        registry=registry,
        strategy="parallel",
        cache=False,
        on_node_started=started.append,
        on_node_progress=lambda *call: progress.append(call),
    )
    assert result.ok
    assert sorted(started) == ["a", "p"]
    assert progress == [("p", 0.5, None, "half way"), ("p", 4, 4, "done")]


def test_resource_gauge_reads_gpus_through_pynvml_discovery(monkeypatch):
    """The GPU samples come from the same discovery the placement uses; without a GPU
    here, discovery is given two GPUs (pynvml itself is checked by gpu_check.py)."""
    from integration.observability.metrics import ResourceCollector
    from integration.resources import gpus

    found = [
        gpus.GpuInfo(
            0, "A", "u0", memory_total_mb=1000, memory_used_mb=250, utilization_percent=40
        ),
        gpus.GpuInfo(
            1, "B", "u1", memory_total_mb=1000, memory_used_mb=750, utilization_percent=60
        ),
    ]
    monkeypatch.setattr(gpus, "discover_gpus", lambda: found)
    (family,) = ResourceCollector().collect()
    usage = {s.labels["resource_type"]: s.value for s in family.samples}
    assert usage["gpu"] == 50.0 and usage["gpu_memory"] == 50.0
    assert 0 <= usage["cpu"] <= 100 and 0 < usage["memory"] <= 100
    monkeypatch.setattr(gpus, "discover_gpus", lambda: [])
    (family,) = ResourceCollector().collect()
    assert {s.labels["resource_type"] for s in family.samples} == {"cpu", "memory"}
