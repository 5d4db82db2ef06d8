"""The engine's scheduler against the inline backend: no Prefect, no server.

Ordering, every failure policy, cancel, cache pruning (resume reads what finished),
fused and batched units, and the hooks, all as plain Python calls.
"""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
from typing import Any

import pytest

from integration.cache.keys import graph_keys
from integration.engine import InlineBackend, RunHooks, Scheduler, compile_plan
from integration.engine.units import (
    FusedNode,
    NodeOutput,
    SharedRun,
    SharedTask,
    execute_shared,
    invoke_node,
    locks_its_key,
)
from integration.graph import bind, load_graph
from integration.graph.gcpause import heap_frozen
from integration.graph.policy import ErrorPolicy
from integration.optimize import ExecutionOptimizer, effective_policies
from integration.plan import make_plan
from integration.result import NodeState, RunState


def plan_of(document: dict[str, Any], registry, outputs=None):
    return make_plan(bind(load_graph(document), registry), outputs)


def chain(length: int, **extra: Any) -> dict[str, Any]:
    nodes = [{"id": "n0", "type": "core.add", "params": {"a": 1, "b": 0}, **extra}]
    edges = []
    for i in range(1, length):
        nodes.append({"id": f"n{i}", "type": "core.add", "params": {"b": 1}, **extra})
        edges.append({"from": f"n{i - 1}.out", "to": f"n{i}.a"})
    return {
        "name": "chain",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"last": f"n{length - 1}.out"},
    }


def policy_graph(on_error: Any) -> dict[str, Any]:
    """``bad`` fails and feeds ``after``; ``side`` is independent."""
    return {
        "name": "policies",
        "nodes": [
            {"id": "bad", "type": "testpack.fail", "params": {"value": 3}, "on_error": on_error},
            {"id": "after", "type": "testpack.constant_half"},
            {"id": "side", "type": "testpack.constant_half", "params": {"value": 8}},
        ],
        "edges": [{"from": "bad.out", "to": "after.value"}],
    }


def run(plan, backend=None, **options: Any):
    backend = backend or InlineBackend()
    options.setdefault("policies", effective_policies(plan, ErrorPolicy()))
    return Scheduler(plan, backend, {}, **options).run(), backend


def states(result) -> dict[str, NodeState]:
    return {node_id: report.state for node_id, report in result.nodes.items()}


class Recorder(RunHooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def run_started(self, name: str, total: int) -> None:
        self.events.append(("run", f"{name}:{total}"))

    def node_started(self, node_id: str, type_name: str) -> dict[str, Any] | None:
        self.events.append(("started", node_id))
        return None

    def node_finished(self, report, finished, total, measured=None, read_bytes=None) -> None:
        self.events.append(("finished", f"{report.node_id}:{report.state}:{finished}/{total}"))


def test_the_engine_imports_neither_prefect_nor_dask():
    code = (
        "import sys, integration.engine\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'dask', "
        "'distributed', 'prefect_dask'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_chain_runs_in_order_and_hooks_hear_every_node(registry):
    plan = plan_of(chain(4), registry)
    recorder = Recorder()
    result, backend = run(plan, hooks=recorder)
    assert result.state == RunState.COMPLETED
    assert result.outputs == {"last": 4}
    assert backend.submitted == ["n0", "n1", "n2", "n3"]
    assert recorder.events[0] == ("run", "chain:4")
    assert recorder.events[1:3] == [("started", "n0"), ("finished", "n0:completed:1/4")]
    assert recorder.events[-1] == ("finished", "n3:completed:4/4")


def test_a_diamond_runs_each_node_once_after_its_producers(registry):
    document = {
        "name": "diamond",
        "nodes": [
            {"id": "top", "type": "core.add", "params": {"a": 1, "b": 1}},
            {"id": "left", "type": "core.multiply", "params": {"b": 3}},
            {"id": "right", "type": "core.add", "params": {"b": 10}},
            {"id": "bottom", "type": "core.add"},
        ],
        "edges": [
            {"from": "top.out", "to": "left.a"},
            {"from": "top.out", "to": "right.a"},
            {"from": "left.out", "to": "bottom.a"},
            {"from": "right.out", "to": "bottom.b"},
        ],
        "outputs": {"total": "bottom.out"},
    }
    result, backend = run(plan_of(document, registry))
    assert result.outputs == {"total": 18}
    assert backend.submitted[0] == "top" and backend.submitted[-1] == "bottom"
    assert sorted(backend.submitted) == ["bottom", "left", "right", "top"]


@pytest.mark.parametrize(
    ("on_error", "expected", "run_state"),
    [
        ("fail", {"bad": "failed", "after": "upstream_failed", "side": "completed"}, "failed"),
        ("skip", {"bad": "skipped", "after": "skipped", "side": "completed"}, "partial"),
        (
            {"fallback": {"outputs": {"out": 10}}},
            {"bad": "fallback", "after": "completed", "side": "completed"},
            "completed",
        ),
        (
            {"fallback": {"type": "testpack.constant_half"}},
            {"bad": "fallback", "after": "completed", "side": "completed"},
            "completed",
        ),
    ],
)
def test_each_policy_marks_the_failed_node_and_its_descendants(
    registry, on_error, expected, run_state
):
    result, _ = run(plan_of(policy_graph(on_error), registry))
    assert {n: str(s) for n, s in states(result).items()} == expected
    assert str(result.state) == run_state
    if "fallback" in str(on_error):
        # What a fallback stood in for is never the node's own result: no cache key.
        assert result.nodes["after"].cache_key is None
        assert "stood in" in result.nodes["bad"].reason


def test_a_default_fallback_feeds_its_outputs_downstream(registry):
    document = policy_graph({"fallback": {"outputs": {"out": 10}}})
    document["outputs"] = {"half": "after.out"}
    result, _ = run(plan_of(document, registry))
    assert result.outputs == {"half": 5}


def test_halt_starts_nothing_after_the_failure_and_leaves_the_rest_pending(registry):
    document = policy_graph("halt")
    result, backend = run(plan_of(document, registry))
    assert result.state == RunState.HALTED and result.halted_at == "bad"
    assert backend.submitted == ["bad"]  # plan order: bad, after, side
    assert states(result) == {
        "bad": NodeState.FAILED,
        "after": NodeState.PENDING,
        "side": NodeState.PENDING,
    }
    assert "halted after node 'bad'" in result.nodes["side"].reason


def test_cancel_keeps_finished_results_and_starts_nothing_more(registry):
    plan = plan_of(chain(5), registry)
    scheduler: Scheduler | None = None

    class CancelAfterTwo(RunHooks):
        def node_finished(self, report, finished, total, measured=None, read_bytes=None):
            if finished == 2:
                assert scheduler is not None
                scheduler.cancel("stopped by the test")

    backend = InlineBackend()
    scheduler = Scheduler(plan, backend, {}, hooks=CancelAfterTwo())
    result = scheduler.run()
    assert result.state == RunState.CANCELLED
    assert backend.submitted == ["n0", "n1"]
    assert [s for s in states(result).values()] == [NodeState.COMPLETED] * 2 + [
        NodeState.PENDING
    ] * 3
    assert result.nodes["n4"].reason == "not run: stopped by the test"
    assert "cancel_noticed_at" in result.extra


class MemoryCache:
    """Keys to outputs, as the engine reads a cache: locate, then load."""

    def __init__(self) -> None:
        self.entries: dict[str, NodeOutput] = {}
        self.runs = 0

    def start_run(self) -> None:
        self.runs += 1

    def locate(self, key: str) -> str | None:
        return "memory" if key in self.entries else None

    def load(self, key: str) -> tuple[Any, str, int] | None:
        found = self.entries.get(key)
        return None if found is None else (found, "memory", 1)


def test_a_rerun_after_a_failure_recomputes_no_finished_node(registry):
    """Resume semantics: what finished is served from the cache; the ancestors of a
    cached node that nothing else needs are neither run nor loaded."""
    plan = plan_of(chain(4), registry)
    keys = graph_keys(plan.graph, {}, "run-1")
    cache = MemoryCache()
    first, _ = run(plan)
    for node_id in ("n0", "n1", "n2"):  # as if the run died before n3 finished
        cache.entries[keys[node_id].key] = NodeOutput(
            {"out": first.outputs["last"] - 3 + int(node_id[1])}, 0.0
        )
    result, backend = run(plan, keys=keys, cache=cache, load_cached=cache.load)
    assert backend.submitted == ["n3"]
    assert result.outputs == {"last": 4}
    assert states(result)["n2"] == NodeState.CACHED
    assert states(result)["n0"] == NodeState.CACHED  # pruned: not loaded, not run
    assert result.nodes["n0"].cache_tier == "memory"
    assert cache.runs == 1


def test_an_entry_that_vanished_after_lookup_is_recomputed(registry):
    plan = plan_of(chain(3), registry)
    keys = graph_keys(plan.graph, {}, "run-1")
    cache = MemoryCache()
    cache.entries[keys["n1"].key] = NodeOutput({"out": 2}, 0.0)

    def load_nothing(key: str):
        return None  # located, but gone (or corrupt) when read

    result, backend = run(plan, keys=keys, cache=cache, load_cached=load_nothing)
    assert backend.submitted == ["n0", "n1", "n2"]
    assert result.outputs == {"last": 3}


def test_fused_segments_report_every_node_and_a_failure_blocks_only_its_dependents(registry):
    document = {
        "name": "fused",
        "nodes": [
            {"id": "a", "type": "core.add", "params": {"a": 1, "b": 1}},
            {"id": "b", "type": "core.divide", "params": {"b": 0}},
            {"id": "c", "type": "core.add", "params": {"b": 1}},
            {"id": "side", "type": "core.add", "params": {"a": 5, "b": 5}},
        ],
        "edges": [{"from": "a.out", "to": "b.a"}, {"from": "b.out", "to": "c.a"}],
    }
    plan = plan_of(document, registry)
    optimizer = ExecutionOptimizer(plan, mode="aggressive", batching=False)
    compiled = compile_plan(plan, None, optimizer, sequential=True)
    assert [s.nodes for s in compiled.segments] == [("a", "b", "c", "side")]
    result, backend = run(plan, optimizer=optimizer)
    assert backend.submitted == ["a"]  # one unit for the four nodes
    assert states(result) == {
        "a": NodeState.COMPLETED,
        "b": NodeState.FAILED,
        "c": NodeState.UPSTREAM_FAILED,
        "side": NodeState.COMPLETED,
    }
    assert result.extra["shared_tasks"][0]["nodes"] == ["a", "b", "c", "side"]


def test_chains_fuse_without_serialising_branches_off_the_sequential_backend(registry):
    class Parallel(InlineBackend):
        max_in_flight = None  # the engine's window, as threads have

    plan = plan_of(chain(6), registry)
    optimizer = ExecutionOptimizer(plan, mode="aggressive", batching=False)
    result, backend = run(plan, Parallel(), optimizer=optimizer)
    assert result.outputs == {"last": 6}
    assert backend.submitted == ["n0"]
    assert all(r.state == NodeState.COMPLETED for r in result.nodes.values())


# -- the heap during a run ---------------------------------------------------------


def test_the_heap_is_frozen_once_for_overlapping_runs_and_thawed_by_the_last():
    # Frozen objects still die by reference counting (other threads free some while
    # this runs), so the count may fall; a second freeze would raise it by at least
    # the objects made in between.
    assert gc.get_freeze_count() == 0
    survivor = [object()]  # alive before the first run starts, so frozen with it
    first, second = heap_frozen(), heap_frozen()
    first.__enter__()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    made_meanwhile = [[] for _ in range(10_000)]
    second.__enter__()  # a second run in the same process freezes nothing more
    assert 0 < gc.get_freeze_count() <= frozen
    first.__exit__(None, None, None)
    assert 0 < gc.get_freeze_count() <= frozen  # the second run still holds it
    second.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0
    with heap_frozen(enabled=False):
        assert gc.get_freeze_count() == 0
    assert survivor and made_meanwhile


def test_a_heap_frozen_by_its_process_or_a_disabled_collector_is_left_alone():
    gc.freeze()  # as a server does before forking its workers
    try:
        theirs = gc.get_freeze_count()
        made_since = [[] for _ in range(10_000)]
        with heap_frozen():
            assert 0 < gc.get_freeze_count() <= theirs
        assert 0 < gc.get_freeze_count() <= theirs  # not thawed under them
        assert made_since
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with heap_frozen():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


# -- locks inside shared tasks -----------------------------------------------------


def test_a_shared_task_locks_only_the_keys_of_nodes_not_declared_cheap(registry):
    cheap, plain = registry.get("core.add"), registry.get("testpack.constant_half")
    assert cheap.cost == "cheap" and plain.cost is None
    nodes = [
        FusedNode(cheap, "a", {"a": 1, "b": 1}, {}, "key-a", None, False),
        FusedNode(plain, "h", {}, {"value": ("a", "out", None)}, "key-h", None, False),
        FusedNode(cheap, "c", {"b": 2}, {"a": ("h", "out", None)}, "key-c", None, False),
    ]
    held: list[list[str | None]] = []
    reread: list[str] = []

    @contextlib.contextmanager
    def hold(keys):
        held.append(list(keys))
        yield

    def stored_meanwhile(fused):
        reread.append(fused.node_id)
        return None

    def run_node(fused, upstream):
        return invoke_node(fused.node_type, fused.node_id, fused.literals, upstream)

    how = SharedRun(run_node, hold=hold, stored_meanwhile=stored_meanwhile)
    task = SharedTask("chain", nodes, {"c"}, {"a": ["h"], "h": ["c"]})
    result = execute_shared(task, {}, how)
    assert result.outputs["c"].values == {"out": 3.0}  # (1 + 1) / 2 + 2
    # The cheap nodes computed without a lock, and so without reading their keys again.
    assert held == [["key-h"]] and reread == ["h"]
    assert not locks_its_key(cheap) and locks_its_key(plain)
