"""ComfyUI prompts on the engine's scheduler, with the inline backend (no server).

The ComfyUI program makes the scheduler's graph dynamic: a lazy input links a ready
node to a producer and makes it wait, an expansion adds nodes whose results become
the expanded node's. Images are brightness values (``nodes/comfy_testing``).
"""

from __future__ import annotations

from typing import Any

from integration.cache.hierarchy import CacheHierarchy
from integration.cache.tiers import MemoryTier
from integration.comfy.execution import ComfyProgram, comfy_inline_backend
from integration.comfy.runtime import GraphBuilder
from integration.comfy.signatures import Signatures
from integration.comfy.validate import check_workflow
from integration.comfy.workflow import import_workflow
from integration.engine import RunHooks, Scheduler
from integration.engine.units import NodeOutput
from integration.graph.policy import ErrorPolicy
from integration.result import NodeState, RunState


def program_for(registry, prompt: dict[str, Any], policy: ErrorPolicy | None = None, cache=None):
    graph = import_workflow(prompt, Signatures.from_registry(registry)).graph
    valid, types = check_workflow(graph, registry, None, None, None)
    store = cache.store if cache is not None else None
    return ComfyProgram(valid.prompt, valid.outputs, types, policy=policy, store=store)


def run(registry, g: GraphBuilder, policy=None, cache=None, hooks=None):
    def load(key: str):
        hit = cache.load(key)
        return None if hit is None else (hit.value, hit.tier, 0)

    program = program_for(registry, g.finalize(), policy, cache)
    scheduler = Scheduler(
        program.plan(),
        comfy_inline_backend(),
        {},
        cache=cache,
        load_cached=load if cache is not None else None,
        hooks=hooks,
        program=program,
    )
    return scheduler.run()


def image(g: GraphBuilder, content: str):
    return g.node("StubImage", content=content, height=8, width=8, batch_size=1)


def states(result) -> dict[str, str]:
    return {n: str(r.state) for n, r in result.nodes.items()}


def test_a_lazy_input_runs_only_the_branch_the_node_asks_for(registry):
    g = GraphBuilder(prefix="")
    black, white = image(g, "BLACK"), image(g, "WHITE")
    mask = g.node("StubMask", value=1.0)
    mix = g.node("TestLazyMixImages", image1=black.out(0), image2=white.out(0), mask=mask.out(0))
    record = g.node("TestRecord", value=mix.out(0))
    result = run(registry, g)
    assert result.state == RunState.COMPLETED, result.errors
    assert result.outputs[record.id] == {"values": [1.0]}  # all white
    assert black.id not in result.nodes  # never asked for: never added to the run
    assert states(result)[white.id] == "completed"
    # the mix asked for its image once the mask was known, then ran with it
    order = list(result.nodes)
    assert order.index(mask.id) < order.index(white.id)


def test_a_lazy_input_from_a_failed_node_marks_the_node_that_asked(registry):
    g = GraphBuilder(prefix="")
    broken = g.node("TestFail", value=image(g, "BLACK").out(0), message="no good")
    mask = g.node("StubMask", value=0.5)  # a mix of both: both images are needed
    mix = g.node("TestLazyMixImages", image1=broken.out(0), image2=broken.out(0), mask=mask.out(0))
    record = g.node("TestRecord", value=mix.out(0))
    result = run(registry, g)
    assert result.state == RunState.FAILED
    assert states(result)[broken.id] == "failed"
    assert states(result)[mix.id] == "upstream_failed"
    assert states(result)[record.id] == "upstream_failed"


def test_an_expansion_adds_nodes_and_the_node_resolves_from_them(registry):
    g = GraphBuilder(prefix="")
    for_open = g.node("TestForLoopOpen", remaining=3, initial_value1=image(g, "WHITE").out(0))
    average = g.node("TestVariadicAverage", input1=image(g, "BLACK").out(0), input2=for_open.out(2))
    for_close = g.node(
        "TestForLoopClose", flow_control=for_open.out(0), initial_value1=average.out(0)
    )
    record = g.node("TestRecord", value=for_close.out(0))
    started: list[str] = []

    class Started(RunHooks):
        def node_started(self, node_id: str, type_name: str) -> dict[str, Any] | None:
            started.append(node_id)
            return None

    result = run(registry, g, hooks=Started())
    assert result.ok, result.errors
    assert result.outputs[record.id] == {"values": [1.0 / 2**3]}
    added = [n for n in result.nodes if n.startswith(f"{for_close.id}.")]
    assert added and all(result.nodes[n].state == NodeState.COMPLETED for n in added)
    assert result.nodes[for_close.id].reason == "expanded"
    # the loop body's nodes were handed to the backend like every other node
    assert set(added) - {n for n in added if result.nodes[n].reason == "expanded"} <= set(started)
    assert len(result.nodes) == len(started)  # each node started once, resolved or run


def test_a_cycle_made_by_an_expansion_fails_the_node_that_expanded(registry):
    g = GraphBuilder(prefix="")
    generator = g.node(
        "TestDynamicDependencyCycle",
        input1=image(g, "BLACK").out(0),
        input2=image(g, "WHITE").out(0),
    )
    record = g.node("TestRecord", value=generator.out(0))
    result = run(registry, g)
    assert result.state == RunState.FAILED
    assert result.nodes[generator.id].state == NodeState.FAILED
    assert "Dependency cycle detected" in result.nodes[generator.id].error.message
    assert result.nodes[record.id].state == NodeState.UPSTREAM_FAILED


def test_the_skip_policy_skips_the_failed_node_and_what_needs_it(registry):
    g = GraphBuilder(prefix="")
    broken = g.node("TestFail", value=image(g, "BLACK").out(0), message="no good")
    after = g.node("TestRecord", value=broken.out(0))
    fine = g.node("TestRecord", value=image(g, "WHITE").out(0))
    result = run(registry, g, policy=ErrorPolicy(action="skip"))
    assert result.state == RunState.PARTIAL
    assert states(result)[broken.id] == "skipped"
    assert states(result)[after.id] == "skipped"
    assert result.outputs[fine.id] == {"values": [1.0]}


def test_the_halt_policy_starts_nothing_after_the_failure(registry):
    g = GraphBuilder(prefix="")
    broken = g.node("TestFail", value=image(g, "BLACK").out(0), message="no good")
    g.node("TestRecord", value=broken.out(0))
    later = g.node("TestRecord", value=image(g, "WHITE").out(0))
    result = run(registry, g, policy=ErrorPolicy(action="halt"))
    assert result.state == RunState.HALTED
    assert result.halted_at == broken.id
    assert result.nodes[later.id].state == NodeState.PENDING


def test_a_cancel_keeps_what_finished_and_starts_nothing_more(registry):
    g = GraphBuilder(prefix="")
    g.node("TestRecord", value=image(g, "BLACK").out(0))
    g.node("TestRecord", value=image(g, "WHITE").out(0))
    running: list[Scheduler] = []

    class CancelAtFirst(RunHooks):
        def node_finished(self, report, finished, total, measured=None, read_bytes=None):
            running[0].cancel()

    program = program_for(registry, g.finalize())
    scheduler = Scheduler(
        program.plan(), comfy_inline_backend(), {}, hooks=CancelAtFirst(), program=program
    )
    running.append(scheduler)
    result = scheduler.run()
    assert result.state == RunState.CANCELLED
    assert sorted(states(result).values()) == ["completed", "pending", "pending", "pending"]


def test_a_second_run_loads_every_node_from_graph_node_entries(registry):
    g = GraphBuilder(prefix="")
    for_open = g.node("TestForLoopOpen", remaining=2, initial_value1=image(g, "WHITE").out(0))
    average = g.node("TestVariadicAverage", input1=image(g, "BLACK").out(0), input2=for_open.out(2))
    for_close = g.node(
        "TestForLoopClose", flow_control=for_open.out(0), initial_value1=average.out(0)
    )
    record = g.node("TestRecord", value=for_close.out(0))
    cache = CacheHierarchy([MemoryTier()])
    first = run(registry, g, cache=cache)
    second = run(registry, g, cache=cache)
    assert first.ok and second.ok
    # the output node is served, and with it nothing upstream is even added
    assert states(second) == {record.id: "cached"}
    assert second.outputs == first.outputs
    entry = cache.load(first.nodes[for_close.id].cache_key).value
    assert isinstance(entry, NodeOutput)  # the format graph nodes use
    assert entry.values["outputs"][0] == [1.0 / 2**2]  # resolved, not the expansion
    assert "expand" not in entry.values


def test_a_failed_node_is_never_stored(registry):
    g = GraphBuilder(prefix="")
    broken = g.node("TestFail", value=image(g, "BLACK").out(0), message="no good")
    g.node("TestRecord", value=broken.out(0))
    cache = CacheHierarchy([MemoryTier()])
    first = run(registry, g, cache=cache)
    assert cache.load(first.nodes[broken.id].cache_key) is None
