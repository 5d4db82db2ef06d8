"""The execution optimizer: fusion, batching and branch analysis.

The first tests are plain planning (no Prefect); the rest run graphs against the
session's real Prefect server, and one on the real Dask cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import integration
from integration.config import ExecutionConfig, FusionConfig, NodegraphConfig, load_config
from integration.errors import ConfigError, ErrorType
from integration.graph import bind, load_graph
from integration.graph.policy import ErrorPolicy
from integration.optimize import (
    SIGNATURES_KEPT,
    ExecutionOptimizer,
    NodeDurations,
    Segment,
    Units,
    node_signature,
    optimization_report,
)
from integration.plan import make_plan
from integration.result import NodeState


def chain(n: int, node_type: str = "testpack.cheap_inc", **params: Any) -> dict[str, Any]:
    nodes = [{"id": f"c{i}", "type": node_type, "params": dict(params)} for i in range(n)]
    edges = [{"from": f"c{i}.out", "to": f"c{i + 1}.x"} for i in range(n - 1)]
    return {
        "name": f"chain-{n}",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"end": f"c{n - 1}.out"},
    }


def diamond() -> dict[str, Any]:
    """top -> a1 -> a2 -> join, top -> b1 -> b2 -> join (two chains side by side)."""
    cheap = "testpack.cheap_inc"
    nodes = [{"id": n, "type": cheap} for n in ("top", "a1", "a2", "b1", "b2")]
    nodes.append({"id": "join", "type": "core.add"})
    edges = [
        {"from": "top.out", "to": "a1.x"},
        {"from": "a1.out", "to": "a2.x"},
        {"from": "top.out", "to": "b1.x"},
        {"from": "b1.out", "to": "b2.x"},
        {"from": "a2.out", "to": "join.a"},
        {"from": "b2.out", "to": "join.b"},
    ]
    return {"name": "diamond", "nodes": nodes, "edges": edges, "outputs": {"sum": "join.out"}}


def optimizer(doc, registry, **kwargs) -> ExecutionOptimizer:
    plan = make_plan(bind(load_graph(doc), registry))
    return ExecutionOptimizer(plan, **kwargs)


# -- planning ---------------------------------------------------------------------------


def test_parallel_strategies_fuse_chains_and_keep_branches_apart(registry):
    found = optimizer(diamond(), registry, mode="auto")
    segments = found.fuse_nodes(found.plan.order, chains_only=True)
    # top has two consumers, so it ends its chain; the branches stay side by side.
    assert sorted(s.nodes for s in segments) == [("a1", "a2"), ("b1", "b2")]
    assert {s.kind for s in segments} == {"chain"}
    assert segments[0].reason == "a chain: declared cheap"
    # core.add is declared cheap, but alone on its level: nothing to share a task with.
    assert found.fusible("join") and found.decisions["join"].reason == "declared cheap"


def test_sequential_fuses_runs_of_consecutive_nodes(registry):
    doc = diamond()
    doc["nodes"][-1]["on_error"] = {"retry": {"attempts": 1}}
    found = optimizer(doc, registry, mode="auto")
    segments = found.fuse_nodes(found.plan.order, chains_only=False)
    # Nothing runs side by side here, so any run of consecutive fusible nodes is one.
    assert found.plan.order[-1] == "join"
    assert [s.nodes for s in segments] == [tuple(found.plan.order[:-1])]
    assert found.decisions["join"].reason == "has retries"


def test_policies_and_resources_keep_a_task_of_their_own(registry):
    doc = chain(6)
    doc["nodes"][1]["on_error"] = {"retry": {"attempts": 2}}
    doc["nodes"][2]["on_error"] = {"timeout_seconds": 5}
    doc["nodes"][3]["on_error"] = {"fallback": {"outputs": {"out": 0}}}
    doc["nodes"][4]["resources"] = {"gpu_count": 1}
    found = optimizer(doc, registry, mode="aggressive")
    reasons = {n: found.decisions[n].reason for n in ("c1", "c2", "c3", "c4")}
    assert reasons == {
        "c1": "has retries",
        "c2": "has a timeout",
        "c3": "has a fallback",
        "c4": "has a GPU",
    }
    assert found.fuse_nodes(found.plan.order, chains_only=True) == []
    # The configuration's default policy counts as the node's own.
    defaults = {n: ErrorPolicy(timeout_seconds=3) for n in found.plan.order}
    strict = optimizer(chain(3), registry, mode="aggressive", policies=defaults)
    assert not any(strict.fusible(n) for n in strict.plan.order)


def test_different_resources_do_not_share_a_task(registry):
    doc = chain(4)
    for node in doc["nodes"][2:]:
        node["resources"] = {"cpu_cores": 1}
    found = optimizer(doc, registry, mode="aggressive")
    assert [s.nodes for s in found.fuse_nodes(found.plan.order, chains_only=True)] == [
        ("c0", "c1"),
        ("c2", "c3"),
    ]


def test_auto_mode_reads_recorded_medians(registry, tmp_path):
    doc = chain(3, node_type="testpack.counted", log="unused", offset=1)
    doc["nodes"][0]["params"]["value"] = 0
    for i in range(1, 3):
        doc["edges"][i - 1]["to"] = f"c{i}.value"
    plan = make_plan(bind(load_graph(doc), registry))
    durations = NodeDurations(tmp_path)
    signature = node_signature(plan.steps["c1"].node)
    assert signature == node_signature(plan.steps["c2"].node)  # same type and params
    durations.record([(signature, 0.0005), (signature, 0.0007)])
    durations.record([(node_signature(plan.steps["c0"].node), 0.050)])
    fresh = NodeDurations(tmp_path)  # read back from the file
    assert fresh.median_ms(signature) == pytest.approx(0.6)
    found = ExecutionOptimizer(plan, mode="auto", max_node_ms=2.0, durations=fresh)
    assert found.decisions["c0"].reason == "median 50.00 ms >= 2 ms"
    segments = found.fuse_nodes(plan.order, chains_only=True)
    assert [s.nodes for s in segments] == [("c1", "c2")]
    assert segments[0].reason == "a chain: median 0.600 ms"
    assert ExecutionOptimizer(plan, mode="off", durations=fresh).fuse_nodes(plan.order, True) == []


def test_duration_history_survives_a_corrupt_file(tmp_path):
    (tmp_path / ".durations.json").write_text("{not json")
    durations = NodeDurations(tmp_path)
    assert durations.median_ms("x") is None
    durations.record([("x", 0.001)])
    assert json.loads((tmp_path / ".durations.json").read_text()) == {"x": [0.001]}


def test_duration_history_keeps_the_most_recent_signatures(tmp_path):
    durations = NodeDurations(tmp_path)
    durations.record([("old", 0.5)])
    durations.record([(f"s{i}", 0.001) for i in range(SIGNATURES_KEPT)])
    kept = json.loads((tmp_path / ".durations.json").read_text())
    assert len(kept) == SIGNATURES_KEPT and "old" not in kept
    assert list(kept)[-1] == f"s{SIGNATURES_KEPT - 1}"
    durations.record([("old", 0.25)])  # back again: the newest, and the oldest one goes
    assert durations.median_ms("old") == pytest.approx(250) and durations.median_ms("s0") is None


def fan(width: int) -> dict[str, Any]:
    """A source feeding ``width`` cheap branches (``b{i}`` adds i), summed pairwise by
    ``core.add``."""
    nodes = [{"id": "source", "type": "testpack.cheap_inc", "params": {"x": 0}}]
    edges = []
    layer = []
    for i in range(width):
        nodes.append({"id": f"b{i:02d}", "type": "testpack.cheap_inc", "params": {"by": i}})
        edges.append({"from": "source.out", "to": f"b{i:02d}.x"})
        layer.append(f"b{i:02d}")
    while len(layer) > 1:
        joined = []
        for left, right in zip(layer[::2], layer[1::2], strict=False):
            node_id = f"s{len(nodes)}"
            nodes.append({"id": node_id, "type": "core.add"})
            edges.append({"from": f"{left}.out", "to": f"{node_id}.a"})
            edges.append({"from": f"{right}.out", "to": f"{node_id}.b"})
            joined.append(node_id)
        layer = joined + layer[len(joined) * 2 :]
    return {
        "name": f"fan-{width}",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"sum": f"{layer[0]}.out"},
    }


def assert_schedulable(plan, segments: list[Segment]) -> None:
    """What the scheduler relies on: every node in at most one segment, a segment's
    nodes in execution order, and no two units waiting on each other."""
    units = Units.of(segments)
    assert len(units.unit_of) == sum(len(s.nodes) for s in segments)
    position = {n: i for i, n in enumerate(plan.order)}
    for segment in segments:
        assert list(segment.nodes) == sorted(segment.nodes, key=position.__getitem__)
        for i, node_id in enumerate(segment.nodes):
            inside = [u for u in plan.steps[node_id].upstream if units.head(u) == segment.head]
            assert all(segment.nodes.index(u) < i for u in inside)
    waits: dict[str, set[str]] = {units.head(n): set() for n in plan.order}
    for n in plan.order:
        waits[units.head(n)] |= {units.head(u) for u in plan.steps[n].upstream} - {units.head(n)}
    done: set[str] = set()
    while len(done) < len(waits):  # Kahn: each round some unit has all producers done
        ready = {u for u, needs in waits.items() if u not in done and needs <= done}
        assert ready, f"units wait on each other: {set(waits) - done}"
        done |= ready


def test_core_nodes_are_fused_on_a_first_run(registry):
    doc = chain(5, node_type="core.add", b=1)
    doc["nodes"][0]["params"]["a"] = 0
    for i in range(1, 5):
        doc["edges"][i - 1]["to"] = f"c{i}.a"
    found = optimizer(doc, registry, mode="auto")  # no durations recorded
    assert {d.reason for d in found.decisions.values()} == {"declared cheap"}
    expected = [tuple(f"c{i}" for i in range(5))]
    assert [s.nodes for s in found.fuse_nodes(found.plan.order, chains_only=True)] == expected
    assert [s.nodes for s in found.fuse_nodes(found.plan.order, chains_only=False)] == expected
    # Those whose params alone can make them slow, or that write a log, are left alone.
    core = registry.get
    assert [core(f"core.{n}").cost for n in ("power", "range", "format", "log")] == [None] * 4
    assert core("core.upper").cost == core("core.json_parse").cost == "cheap"


def test_parallel_strategies_split_a_wide_level_into_one_task_per_worker(registry):
    found = optimizer(fan(10), registry, mode="auto", workers=3)
    plan = found.plan
    segments = found.fuse_nodes(plan.order, chains_only=True)
    assert_schedulable(plan, segments)
    by_level = {}
    for segment in segments:
        assert segment.kind == "level"
        by_level.setdefault(plan.steps[segment.head].level, []).append(len(segment.nodes))
    # 10 branches in 3 tasks; 5 sums in 2 (a task holds two nodes or more), 2 sums in
    # one; the last two levels hold one sum each, which runs alone.
    assert by_level == {1: [4, 3, 3], 2: [3, 2], 3: [2]}
    assert segments[0].reason == (
        "level 1: 10 independent nodes in 3 task(s) for 3 worker(s); declared cheap"
    )
    assert segments[0].name == "b00+b01+…+b03 (4 nodes)"
    # The engine passes its pool size; one worker means one task per level.
    single = found.fuse_nodes(plan.order, chains_only=True, workers=1)
    assert [len(s.nodes) for s in single if plan.steps[s.head].level == 1] == [10]
    with pytest.raises(ValueError, match="workers must be at least 1"):
        ExecutionOptimizer(plan, workers=0)


def test_level_segments_keep_units_acyclic_on_mixed_graphs(registry):
    # Chains, fans, lone nodes that must keep their own task, resources and cached
    # (pruned) nodes mixed in a layered random graph.
    import random

    rng = random.Random(17)
    nodes, edges, previous = [], [], []
    for layer in range(8):
        current = []
        for i in range(rng.randint(1, 6)):
            node_id = f"l{layer}n{i}"
            node = {"id": node_id, "type": "testpack.cheap_inc", "params": {"by": layer}}
            if rng.random() < 0.15:
                node["on_error"] = {"retry": {"attempts": 1}}
            if rng.random() < 0.15:
                node["resources"] = {"cpu_cores": 1}
            if previous:
                edges.append({"from": f"{rng.choice(previous)}.out", "to": f"{node_id}.x"})
            nodes.append(node)
            current.append(node_id)
        previous = current if rng.random() < 0.7 else previous + current
    outputs = {n["id"]: f"{n['id']}.out" for n in nodes}
    doc = {"name": "mixed", "nodes": nodes, "edges": edges, "outputs": outputs}
    found = optimizer(doc, registry, mode="auto")
    order = found.plan.order
    for workers in (1, 2, 5):
        for executing in (order, order[len(order) // 3 :]):
            segments = found.fuse_nodes(executing, chains_only=True, workers=workers)
            assert {n for s in segments for n in s.nodes} <= set(executing)
            assert_schedulable(found.plan, segments)
            kinds = {s.kind for s in segments}
            assert kinds <= {"chain", "level"}
            for segment in segments:
                compat = {found.decisions[n].compat for n in segment.nodes}
                assert len(compat) == 1 and all(found.fusible(n) for n in segment.nodes)


def test_segment_names_list_their_nodes_and_shorten_long_ones():
    assert Segment(("a", "b", "c")).name == "a→b→c"
    long = Segment(tuple(f"n{i}" for i in range(1000)))
    assert long.name == "n0→n1→…→n999 (1000 nodes)"
    assert Segment(("x", "y"), kind="batch").name == "x+y"


def test_branches_report_widths_and_the_critical_path(registry):
    report = optimizer(diamond(), registry).parallelize_branches()
    assert report.widths == [1, 2, 2, 1]
    assert report.max_parallelism == 2
    assert report.critical_path[0] == "top" and report.critical_path[-1] == "join"
    assert len(report.critical_path) == 4
    assert report.critical_path_ms is None  # no recorded durations


def scaled(count: int, **params: Any) -> dict[str, Any]:
    """``count`` sources, each feeding a ``testpack.scale`` node its data by an edge, and
    one more scale node with another factor."""
    nodes, edges = [], []
    for i in range(count):
        nodes.append({"id": f"v{i}", "type": "testpack.cheap_inc", "params": {"x": i, "by": 0}})
        nodes.append({"id": f"s{i}", "type": "testpack.scale", "params": dict(params)})
        edges.append({"from": f"v{i}.out", "to": f"s{i}.x"})
    nodes.append({"id": "odd", "type": "testpack.scale", "params": {"factor": 3.0, **params}})
    edges.append({"from": "v1.out", "to": "odd.x"})
    outputs = {n["id"]: f"{n['id']}.out" for n in nodes if n["id"][0] in "so"}
    return {"name": "batched", "nodes": nodes, "edges": edges, "outputs": outputs}


def test_batches_group_same_type_params_and_level(registry):
    found = optimizer(scaled(5), registry)
    batches = found.batch_similar_operations(found.plan.levels[1])
    # Data arrives by edges; the params (factor) are part of the key; max_batch is 3.
    assert [b.nodes for b in batches] == [("s0", "s1", "s2"), ("s3", "s4")]
    assert found.batch_key("odd") != found.batch_key("s0")
    assert not found.fusible("s0") and found.decisions["s0"].reason == "has a batch function"


def test_fusion_config_takes_a_word_or_a_section(tmp_path):
    assert (
        load_config(None, environ={"NODEGRAPH_EXECUTION__FUSION": "off"}).execution.fusion.mode
        == "off"
    )
    file = tmp_path / "nodegraph.yaml"
    file.write_text("execution:\n  fusion:\n    mode: aggressive\n    max_node_ms: 5\n")
    fusion = load_config(file, environ={}).execution.fusion
    assert (fusion.mode, fusion.max_node_ms) == ("aggressive", 5.0)
    with pytest.raises(ConfigError, match="execution.fusion.mode"):
        load_config(None, environ={"NODEGRAPH_EXECUTION__FUSION": "fast"})


def test_plan_report_says_why_each_unit_was_formed(registry):
    doc = diamond()
    doc["nodes"][0]["on_error"] = {"retry": {"attempts": 2}}
    report = optimization_report(optimizer(doc, registry, mode="auto"), "parallel")
    assert report["tasks"] == 4  # top, a1→a2, b1→b2, join
    assert [s["name"] for s in report["segments"]] == ["a1→a2", "b1→b2"]
    assert report["own_task"] == {"has retries": ["top"], "no fusible neighbour": ["join"]}
    assert report["units"] == [
        {"name": "top", "kind": "node", "nodes": ["top"], "reason": "has retries"},
        {
            "name": "a1→a2",
            "kind": "chain",
            "nodes": ["a1", "a2"],
            "reason": "a chain: declared cheap",
        },
        {
            "name": "b1→b2",
            "kind": "chain",
            "nodes": ["b1", "b2"],
            "reason": "a chain: declared cheap",
        },
        {"name": "join", "kind": "node", "nodes": ["join"], "reason": "no fusible neighbour"},
    ]
    assert report["parallelism"] == [1, 2, 2, 1]
    off = optimization_report(optimizer(doc, registry, mode="off"), "sequential")
    assert {u["reason"] for u in off["units"]} == {"fusion is off"} and off["tasks"] == 6


# -- runs -------------------------------------------------------------------------------

STRATEGIES = [
    pytest.param({"strategy": "sequential"}, id="sequential"),
    pytest.param({"strategy": "parallel"}, id="threads"),
    pytest.param({"strategy": "parallel", "processes": True, "max_workers": 2}, id="processes"),
]


def config(mode: str = "auto", **execution: Any) -> NodegraphConfig:
    settings = NodegraphConfig(
        execution=ExecutionConfig(fusion=FusionConfig(mode=mode), **execution)
    )
    settings.monitoring.events = settings.monitoring.artifacts = False
    return settings


def task_run_names(flow_run_id: str, limit_s: float = 30) -> list[str]:
    """The names of a flow run's task runs, once the server has stored them (task runs
    arrive as events, a moment after the run)."""
    deadline = time.monotonic() + limit_s
    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=flow_runs)
            if runs or time.monotonic() > deadline:
                return [run.name for run in runs]
            time.sleep(0.2)


def executed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fused_chain_runs_as_one_task_and_reports_every_node(prefect_server, registry, strategy):
    result = integration.run(chain(5), registry=registry, config=config(), **strategy)
    assert result.ok and result.outputs == {"end": 5}
    assert result.extra["shared_tasks"] == [
        {"name": "c0→c1→…→c4 (5 nodes)", "kind": "chain", "nodes": [f"c{i}" for i in range(5)]}
    ]
    task_runs = {report.task_run_id for report in result.nodes.values()}
    assert len(task_runs) == 1 and None not in task_runs
    for report in result.nodes.values():
        assert report.state == NodeState.COMPLETED and report.duration_s is not None
        assert report.cache_key  # each node keeps its own key
    assert task_run_names(result.flow_run_id) == ["c0→c1→…→c4 (5 nodes)"]


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_inside_a_segment_is_the_failing_nodes_own(prefect_server, registry, strategy):
    doc = {
        "name": "fused-failure",
        "nodes": [
            {"id": "start", "type": "testpack.cheap_inc", "params": {"x": 1}},
            {"id": "divide", "type": "testpack.cheap_div", "params": {"b": 0}},
            {"id": "after", "type": "testpack.cheap_inc"},
        ],
        "edges": [
            {"from": "start.out", "to": "divide.a"},
            {"from": "divide.out", "to": "after.x"},
        ],
        "outputs": {"start": "start.out", "after": "after.out"},
    }
    result = integration.run(doc, registry=registry, config=config(), **strategy)
    states = {n: r.state for n, r in result.nodes.items()}
    assert states == {
        "start": NodeState.COMPLETED,
        "divide": NodeState.FAILED,
        "after": NodeState.UPSTREAM_FAILED,
    }
    error = result.nodes["divide"].error
    assert error.error_type == ErrorType.RUNTIME and "ZeroDivisionError" in error.exception_type
    assert result.outputs == {"start": 2}  # what finished keeps its result
    # The finished node was cached under its own key: a fixed re-run does not redo it.
    doc["nodes"][1]["params"]["b"] = 1
    again = integration.run(doc, registry=registry, config=config(), **strategy)
    assert again.ok and again.outputs == {"start": 2, "after": 3}
    assert again.nodes["start"].state == NodeState.CACHED
    assert again.nodes["divide"].state == NodeState.COMPLETED


@pytest.mark.integration
def test_skip_inside_a_sequential_segment_spares_independent_nodes(prefect_server, registry):
    doc = {
        "name": "fused-skip",
        "nodes": [
            {"id": "bad", "type": "testpack.cheap_div", "params": {"a": 1, "b": 0}},
            {"id": "child", "type": "testpack.cheap_inc"},
            {"id": "other", "type": "testpack.cheap_inc", "params": {"x": 7}},
        ],
        "edges": [{"from": "bad.out", "to": "child.x"}],
        "outputs": {"child": "child.out", "other": "other.out"},
    }
    doc["nodes"][0]["on_error"] = "skip"
    result = integration.run(doc, registry=registry, config=config(), strategy="sequential")
    assert [s["nodes"] for s in result.extra["shared_tasks"]] == [["bad", "child", "other"]]
    states = {n: r.state for n, r in result.nodes.items()}
    assert states == {
        "bad": NodeState.SKIPPED,
        "child": NodeState.SKIPPED,
        "other": NodeState.COMPLETED,
    }
    assert result.state == "partial" and result.outputs == {"other": 8}


@pytest.mark.integration
def test_halt_inside_a_segment_leaves_the_rest_pending_and_resumable(prefect_server, registry):
    doc = chain(4)
    doc["nodes"][1] = {"id": "c1", "type": "testpack.cheap_div", "params": {"b": 0}}
    doc["nodes"][1]["on_error"] = "halt"
    doc["edges"][0]["to"] = "c1.a"
    doc["nodes"][3]["params"] = {"x": 5}
    doc["edges"].pop()  # c3 stands alone, after c2 in order
    doc["outputs"] = {"c2": "c2.out", "c3": "c3.out"}
    result = integration.run(doc, registry=registry, config=config(), strategy="sequential")
    states = {n: r.state for n, r in result.nodes.items()}
    assert states["c0"] == NodeState.COMPLETED and states["c1"] == NodeState.FAILED
    assert states["c2"] == NodeState.PENDING and states["c3"] == NodeState.PENDING
    assert result.state == "halted" and result.halted_at == "c1"


@pytest.mark.integration
def test_every_fused_node_keeps_its_own_cache_entry(prefect_server, registry, tmp_path):
    log = tmp_path / "executed.log"
    doc = chain(6, log=str(log))
    first = integration.run(doc, registry=registry, config=config())
    assert first.ok and len(executed(log)) == 6
    warm = integration.run(doc, registry=registry, config=config())
    assert warm.counts() == {"cached": 6} and len(executed(log)) == 6  # 0 nodes ran
    # Change the fourth node: it and its descendants run again, nothing before it.
    doc["nodes"][3]["params"]["by"] = 10
    changed = integration.run(doc, registry=registry, config=config())
    assert changed.outputs == {"end": 15}
    assert [n for n, r in changed.nodes.items() if r.state == NodeState.COMPLETED] == [
        "c3",
        "c4",
        "c5",
    ]
    assert len(executed(log)) == 9


@pytest.mark.integration
def test_auto_fusion_learns_from_recorded_durations(prefect_server, registry, tmp_path):
    doc = chain(4, node_type="testpack.counted", log=str(tmp_path / "log"), offset=1)
    doc["nodes"][0]["params"]["value"] = 0
    for i in range(1, 4):
        doc["edges"][i - 1]["to"] = f"c{i}.value"
    first = integration.run(doc, registry=registry, config=config(), cache=False)
    assert "shared_tasks" not in first.extra  # nothing known about counted yet
    second = integration.run(doc, registry=registry, config=config(), cache=False)
    assert second.outputs == first.outputs == {"end": 4}
    # c0 has other params (value=0) than c1..c3: its own history says it is cheap too.
    assert [s["nodes"] for s in second.extra["shared_tasks"]] == [["c0", "c1", "c2", "c3"]]


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES[:2])
def test_batchable_nodes_run_as_one_call_with_their_own_entries(
    prefect_server, registry, tmp_path, strategy
):
    log = tmp_path / "batches.log"
    doc = scaled(4, log=str(log))
    result = integration.run(doc, registry=registry, config=config(), **strategy)
    assert result.ok
    assert result.outputs == {"s0": 0.0, "s1": 2.0, "s2": 4.0, "s3": 6.0, "odd": 3.0}
    # One batch call of three; s3 and odd (another factor) run alone, through the plain
    # function, which does not log.
    assert executed(log) == ["3"]
    batches = [s["nodes"] for s in result.extra["shared_tasks"] if s["kind"] == "batch"]
    assert [sorted(b) for b in batches] == [["s0", "s1", "s2"]]  # the last ready leads
    assert all(result.nodes[n].cache_key for n in ("s0", "s1", "s2"))
    warm = integration.run(doc, registry=registry, config=config(), **strategy)
    assert all(warm.nodes[n].state == NodeState.CACHED for n in result.outputs)
    assert executed(log) == ["3"]


@pytest.mark.integration
def test_a_wide_level_runs_in_one_task_per_worker_on_threads(prefect_server, registry):
    doc = fan(10)
    result = integration.run(
        doc, registry=registry, config=config(), strategy="parallel", max_workers=3
    )
    assert result.ok and result.outputs == {"sum": sum(1 + i for i in range(10))}
    shared = result.extra["shared_tasks"]
    assert [len(s["nodes"]) for s in shared if s["kind"] == "level"] == [4, 3, 3, 3, 2, 2]
    assert len({r.task_run_id for r in result.nodes.values()}) == 1 + 6 + 2  # source, two sums
    assert all(r.state == NodeState.COMPLETED for r in result.nodes.values())


@pytest.mark.integration
def test_fusion_off_keeps_one_task_per_node(prefect_server, registry):
    result = integration.run(chain(3), registry=registry, config=config("off"))
    assert result.ok and "shared_tasks" not in result.extra
    assert len({r.task_run_id for r in result.nodes.values()}) == 3


@pytest.mark.integration
def test_a_fused_chain_on_the_dask_cluster(prefect_server, registry, dask_cluster):
    settings = config(dask_address=dask_cluster.address)
    result = integration.run(chain(50), registry=registry, config=settings, strategy="distributed")
    assert result.ok and result.outputs == {"end": 50}
    assert len(result.extra["shared_tasks"]) == 1
    assert all(r.state == NodeState.COMPLETED for r in result.nodes.values())


def test_the_plan_command_shows_segments_and_the_critical_path(tmp_path):
    from typer.testing import CliRunner

    from integration.cli import app as cli

    packs = Path(__file__).parent / "fixtures" / "packs"
    graph = tmp_path / "diamond.json"
    graph.write_text(json.dumps(diamond()))
    runner = CliRunner()
    args = ["plan", str(graph), "--nodes", str(packs)]
    found = json.loads(runner.invoke(cli.app, [*args, "--json", "-s", "parallel"]).stdout)
    assert [s["nodes"] for s in found["optimizer"]["segments"]] == [["a1", "a2"], ["b1", "b2"]]
    assert found["optimizer"]["tasks"] == 4
    reasons = {u["name"]: u["reason"] for u in found["optimizer"]["units"]}
    assert reasons["a1→a2"] == "a chain: declared cheap"
    assert reasons["join"] == "no fusible neighbour"
    sequential = json.loads(runner.invoke(cli.app, [*args, "--json", "-s", "sequential"]).stdout)
    assert sequential["optimizer"]["tasks"] == 1  # six cheap nodes, one after another
    human = runner.invoke(cli.app, [*args, "-s", "parallel"], terminal_width=200)
    assert human.exit_code == 0
    assert "a1→a2" in human.stdout and "critical path (4 nodes)" in human.stdout
    assert "a chain: declared cheap" in human.stdout
    assert "own task: no fusible neighbour" in human.stdout


@pytest.mark.integration
def test_fused_nodes_keep_their_own_events_and_profiles(prefect_server, registry):
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    settings = config()
    settings.monitoring.events = True
    settings.monitoring.profile = True
    result = integration.run(chain(4), registry=registry, config=settings)
    assert result.ok and len(result.extra["shared_tasks"]) == 1
    # Each node of the shared task is measured on its own (through its observe dict).
    rows = {row.node_id: row for row in result.profile.nodes}
    assert set(rows) == {"c0", "c1", "c2", "c3"}
    assert all(row.cpu_s is not None and row.output_bytes > 0 for row in rows.values())
    assert all(row.cache == "miss" for row in rows.values())
    # And emits its own event.
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            event_filter = EventFilter(
                event=EventNameFilter(prefix=["nodegraph.node."]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{result.flow_run_id}"]),
            )
            events = client.read_events(filter=event_filter, limit=50).events
            if len(events) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    by_node = {e.resource["nodegraph.node"]: e.event for e in events}
    assert by_node == {f"c{i}": "nodegraph.node.completed" for i in range(4)}
