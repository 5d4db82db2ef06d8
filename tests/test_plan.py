"""Planning: lazy selection of what the requested outputs need."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.graph import bind, load_graph
from integration.plan import PlanError, make_plan

GRAPHS = Path(__file__).parent / "fixtures" / "graphs"


@pytest.fixture(scope="module")
def bound(registry):
    return bind(load_graph(GRAPHS / "arithmetic.yaml"), registry)


def test_declared_outputs_select_their_ancestors_only(bound):
    plan = make_plan(bound)
    assert "unused" not in plan.steps
    assert set(plan.order) == set(bound.order) - {"unused"}
    assert plan.to_dict()["skipped_as_unneeded"] == ["unused"]


def test_requested_output_runs_only_its_ancestors(bound):
    plan = make_plan(bound, ["total"])
    assert plan.order == ["split", "scaled", "total"]
    assert plan.levels == [["split"], ["scaled"], ["total"]]
    assert [(o.name, o.node, o.port) for o in plan.outputs] == [("total", "total", "out")]


def test_node_port_references_can_be_requested(bound):
    plan = make_plan(bound, ["split.remainder", "picked"])
    assert set(plan.order) == {"split", "parsed", "picked"}
    assert plan.steps["split"].consumers == []
    assert plan.steps["parsed"].consumers == ["picked"]


def test_unknown_outputs_are_explained(bound):
    with pytest.raises(PlanError) as caught:
        make_plan(bound, ["nothing", "split.nope"])
    text = str(caught.value)
    assert "'nothing' is neither a graph output (total, picked, label, quotient_text)" in text
    assert "node 'split' (testpack.divmod) has no output 'nope'" in text


def test_without_declared_outputs_every_node_runs_and_sinks_are_returned(registry):
    graph = load_graph(
        {
            "name": "sinks",
            "nodes": [
                {"id": "a", "type": "core.int", "params": {"value": 1}},
                {"id": "b", "type": "core.negate"},
                {"id": "c", "type": "core.int", "params": {"value": 2}},
            ],
            "edges": [{"from": "a.out", "to": "b.a"}],
        }
    )
    plan = make_plan(bind(graph, registry))
    assert plan.order == ["a", "b", "c"]
    assert [o.name for o in plan.outputs] == ["b.out", "c.out"]
