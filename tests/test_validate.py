"""Validation: every problem in one pass, per node, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.graph import GraphInputError, GraphValidationError, bind, load_graph
from integration.graph.validate import resolve_inputs

GRAPHS = Path(__file__).parent / "fixtures" / "graphs"


@pytest.fixture(scope="module")
def everything_wrong(registry):
    graph = load_graph(GRAPHS / "invalid_everything.yaml")
    with pytest.raises(GraphValidationError) as caught:
        bind(graph, registry)
    return caught.value


def codes(error, node_id):
    return sorted(p.code for p in error.by_node().get(node_id, []))


def test_every_problem_is_found_in_one_pass(everything_wrong):
    assert len(everything_wrong.problems) == 15
    assert codes(everything_wrong, "typo") == ["unknown_type"]
    assert codes(everything_wrong, "ok") == ["unknown_input", "unknown_port"]
    assert codes(everything_wrong, "needs_input") == ["missing_input", "unknown_port"]
    assert codes(everything_wrong, "mismatch") == ["type_mismatch"]
    assert codes(everything_wrong, "rounding") == ["bad_value"]
    assert codes(everything_wrong, "dup") == ["duplicate_id"]
    assert codes(everything_wrong, "twice") == ["input_fed_twice"]
    assert codes(everything_wrong, "choose") == ["bad_value"]
    assert codes(everything_wrong, "wrongtype") == ["bad_transform", "bad_value"]
    assert codes(everything_wrong, "<graph>") == [
        "dangling_edge",
        "dangling_output",
        "dangling_output",
    ]


def test_messages_say_what_and_how_to_fix(everything_wrong):
    messages = {p.message for p in everything_wrong.problems}
    assert "unknown node type 'core.ad'; did you mean core.add, core.and, core.max?" in messages
    assert "params: core.add has no input 'c'; it has a, b" in messages
    assert "param 'digits' must be <= 15, got 99" in messages
    assert (
        "edge text.out -> mismatch.a: str cannot feed input 'a' of type float; "
        "add a transform or change a port type"
    ) in messages
    assert "required input 'a' (float) has no edge or param" in messages
    assert "edge ok.out -> ghost.a: there is no node 'ghost'" in messages


def test_comfyui_node_errors_shape(everything_wrong):
    errors = everything_wrong.node_errors
    assert errors["typo"]["class_type"] == "core.ad"
    first = errors["typo"]["errors"][0]
    assert set(first) == {"type", "message", "details", "extra_info"}
    assert first["type"] == "unknown_type"
    assert errors["rounding"]["dependent_outputs"] == []


def test_cycle_reports_its_path(registry):
    graph = load_graph(GRAPHS / "cycle.yaml")
    with pytest.raises(GraphValidationError) as caught:
        bind(graph, registry)
    (problem,) = caught.value.problems
    assert problem.code == "cycle"
    assert problem.message == "cycle: a -> b -> c -> a"


def test_reserved_input_node_id(registry):
    graph = load_graph(
        {"name": "g", "nodes": [{"id": "inputs", "type": "core.int", "params": {"value": 1}}]}
    )
    with pytest.raises(GraphValidationError, match="reserved"):
        bind(graph, registry)


def test_valid_graph_binds_every_port(registry):
    bound = bind(load_graph(GRAPHS / "arithmetic.yaml"), registry)
    split = bound.nodes["split"]
    assert split.bindings["a"].kind == "input" and split.bindings["a"].source_port == "x"
    assert bound.nodes["scaled"].bindings["b"].kind == "param"
    assert bound.nodes["total"].bindings["a"].source == "scaled"
    assert bound.nodes["picked"].bindings["a"].transform.name == "json_path"
    assert bound.order.index("split") < bound.order.index("scaled") < bound.order.index("total")


def test_optional_ports_bind_to_their_defaults(registry):
    bound = bind(
        load_graph(
            {"name": "g", "nodes": [{"id": "r", "type": "core.round", "params": {"a": 1.26}}]}
        ),
        registry,
    )
    assert bound.nodes["r"].bindings["digits"].kind == "default"


def test_input_values_are_checked_and_defaults_filled(registry):
    bound = bind(load_graph(GRAPHS / "arithmetic.yaml"), registry)
    values = resolve_inputs(bound, {"x": 3})
    assert values["x"] == 3 and values["divisor"] == 5
    with pytest.raises(GraphInputError, match=r"input 'x' must be >= 0, got -1"):
        resolve_inputs(bound, {"x": -1})
    with pytest.raises(GraphInputError, match=r"unknown input\(s\) y"):
        resolve_inputs(bound, {"y": 1})
    with pytest.raises(GraphInputError, match="expected int, got str"):
        resolve_inputs(bound, {"x": "three"})
