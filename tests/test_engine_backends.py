"""One graph and one ComfyUI prompt, every backend: the inline engine run and the
Prefect runs on each strategy give the same node states and outputs."""

from __future__ import annotations

from typing import Any

import pytest

import integration
from integration.comfy.execution import ComfyProgram, comfy_inline_backend
from integration.comfy.signatures import Signatures
from integration.comfy.validate import check_workflow
from integration.comfy.workflow import import_workflow
from integration.config import CachingConfig, ExecutionConfig, NodegraphConfig
from integration.engine import InlineBackend, Scheduler
from integration.graph import bind, load_graph
from integration.graph.policy import ErrorPolicy
from integration.optimize import ExecutionOptimizer, effective_policies
from integration.plan import make_plan
from tests.conftest import FIXTURES

PROMPT = FIXTURES / "comfy" / "lazy_loop_fail_api.json"
"""A lazy input (a mix that needs one image), a loop by expansion, a failing node."""

STRATEGIES = ["sequential", "parallel", "processes", "distributed"]

GRAPH: dict[str, Any] = {
    "name": "every-backend",
    "nodes": [
        {"id": "top", "type": "core.add", "params": {"a": 1, "b": 1}},
        {"id": "left", "type": "core.multiply", "params": {"b": 3}},
        {"id": "right", "type": "core.add", "params": {"b": 10}},
        {"id": "bottom", "type": "core.add"},
        {"id": "broken", "type": "testpack.fail", "on_error": "skip"},
        {"id": "after_broken", "type": "testpack.constant_half"},
        {
            "id": "stand_in",
            "type": "testpack.fail",
            "on_error": {"fallback": {"outputs": {"out": 6}}},
        },
        {"id": "halved", "type": "testpack.constant_half"},
        {"id": "lost", "type": "testpack.fail", "params": {"value": 2}},
        {"id": "never", "type": "core.add", "params": {"b": 1}},
    ],
    "edges": [
        {"from": "top.out", "to": "left.a"},
        {"from": "top.out", "to": "right.a"},
        {"from": "left.out", "to": "bottom.a"},
        {"from": "right.out", "to": "bottom.b"},
        {"from": "broken.out", "to": "after_broken.value"},
        {"from": "stand_in.out", "to": "halved.value"},
        {"from": "lost.out", "to": "never.a"},
    ],
    "outputs": {
        "total": "bottom.out",
        "half": "halved.out",
        "skipped": "after_broken.out",
        "never": "never.out",
    },
}


def outcome(result) -> tuple[dict[str, str], dict[str, Any]]:
    return {n: str(r.state) for n, r in result.nodes.items()}, dict(result.outputs)


@pytest.fixture(scope="module")
def inline_outcome(registry):
    plan = make_plan(bind(load_graph(GRAPH), registry))
    optimizer = ExecutionOptimizer(plan, mode="auto")
    scheduler = Scheduler(
        plan,
        InlineBackend(),
        {},
        policies=effective_policies(plan, ErrorPolicy()),
        optimizer=optimizer,
    )
    return outcome(scheduler.run())


def test_the_inline_outcome_is_the_expected_one(inline_outcome):
    states, outputs = inline_outcome
    assert outputs == {"total": 18, "half": 3}
    assert states == {
        "top": "completed",
        "left": "completed",
        "right": "completed",
        "bottom": "completed",
        "broken": "skipped",
        "after_broken": "skipped",
        "stand_in": "fallback",
        "halved": "completed",
        "lost": "failed",
        "never": "upstream_failed",
    }


def strategy_options(strategy: str, request) -> tuple[NodegraphConfig, dict[str, Any]]:
    # Untagged tasks: a tagged task run asks the server for a concurrency slot first,
    # a round trip per node that tells nothing about states and outputs.
    execution = ExecutionConfig(tag_node_types=False)
    options: dict[str, Any] = {"strategy": strategy}
    if strategy == "processes":
        options = {"strategy": "parallel", "processes": True}
    if strategy == "distributed":
        address = request.getfixturevalue("dask_cluster").address
        execution = ExecutionConfig(tag_node_types=False, dask_address=address)
    return NodegraphConfig(execution=execution, caching=CachingConfig(enable=False)), options


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prefect_on_each_strategy_matches_the_inline_engine(
    strategy, inline_outcome, registry, prefect_server, request
):
    config, options = strategy_options(strategy, request)
    result = integration.run(GRAPH, registry=registry, config=config, **options)
    assert outcome(result) == inline_outcome


@pytest.fixture(scope="module")
def inline_comfy_outcome(registry):
    graph = import_workflow(PROMPT, Signatures.from_registry(registry)).graph
    valid, types = check_workflow(graph, registry, None, None, None)
    program = ComfyProgram(valid.prompt, valid.outputs, types, name=graph.name)
    scheduler = Scheduler(program.plan(), comfy_inline_backend(), {}, program=program)
    return outcome(scheduler.run())


def test_the_inline_comfy_outcome_is_the_expected_one(inline_comfy_outcome):
    states, outputs = inline_comfy_outcome
    assert outputs == {"5": {"values": [0.0]}, "9": {"values": [0.25]}}
    assert states["4"] == "completed"  # the lazy mix, which needed only image 1
    assert states["8"] == "completed"  # the loop's close, resolved from its expansion
    assert any(n.startswith("8.") for n in states)  # the nodes it expanded into
    assert (states["10"], states["11"]) == ("failed", "upstream_failed")


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_comfy_prompt_on_each_strategy_matches_the_inline_engine(
    strategy, inline_comfy_outcome, registry, prefect_server, request
):
    config, options = strategy_options(strategy, request)
    result = integration.run(PROMPT, registry=registry, config=config, **options)
    assert outcome(result) == inline_comfy_outcome
