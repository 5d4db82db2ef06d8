"""Ordering: Kahn's algorithm, levels, lazy selection; properties on random graphs."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.graph.order import (
    CycleError,
    ancestors,
    descendants,
    find_cycle,
    levels,
    successors_of,
    topological_order,
)


def test_ties_are_broken_by_node_id():
    preds = {"c": [], "a": [], "b": [], "d": ["c", "a"]}
    assert topological_order(preds) == ["a", "b", "c", "d"]


def test_levels_group_nodes_that_can_run_side_by_side():
    preds = {"a": [], "b": ["a"], "c": ["a"], "d": ["b"], "e": ["c", "d"], "f": []}
    order = topological_order(preds)
    assert levels(preds, order) == [["a", "f"], ["b", "c"], ["d"], ["e"]]


def test_ancestors_and_descendants():
    preds = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x", "b"]}
    assert ancestors(preds, ["c"]) == {"a", "b", "c"}
    assert descendants(successors_of(preds), ["b"]) == {"c", "y"}


def test_cycle_error_names_the_cycle():
    preds = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    with pytest.raises(CycleError) as caught:
        topological_order(preds)
    assert caught.value.path == ["a", "b", "c", "a"]


def test_long_chains_do_not_recurse():
    n = 100_000
    preds = {f"n{i:06d}": ([f"n{i - 1:06d}"] if i else []) for i in range(n)}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        order = topological_order(preds)
        grouped = levels(preds, order)
        found = ancestors(preds, [order[-1]])
        below = descendants(successors_of(preds), [order[0]])
        ring = dict(preds, n000000=[f"n{n - 1:06d}"])
        cycle = find_cycle(ring)
    finally:
        sys.setrecursionlimit(limit)
    assert order[0] == "n000000" and len(grouped) == n
    assert len(found) == n and len(below) == n - 1
    assert len(cycle) == n + 1


@st.composite
def dags(draw):
    """Random DAGs: each node may depend on any node with a smaller index."""
    size = draw(st.integers(min_value=1, max_value=40))
    names = draw(st.permutations([f"v{i}" for i in range(size)]))
    preds = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        preds[name] = draw(st.lists(st.sampled_from(earlier), max_size=4)) if earlier else []
    return preds


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_edge_goes_forward_in_the_order(preds):
    order = topological_order(preds)
    position = {node: i for i, node in enumerate(order)}
    assert sorted(order) == sorted(preds)
    for node, parents in preds.items():
        for parent in parents:
            assert position[parent] < position[node]
    depth = {n: d for d, group in enumerate(levels(preds, order)) for n in group}
    for node, parents in preds.items():
        for parent in parents:
            assert depth[parent] < depth[node]


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_a_graph_with_a_cycle_reports_a_real_cycle(preds, data):
    nodes = sorted(preds)
    # Close a cycle: make an ancestor-or-self of `tail` depend on `tail`.
    tail = data.draw(st.sampled_from(nodes))
    head = data.draw(st.sampled_from(sorted(ancestors(preds, [tail]))))
    cyclic = {n: list(p) for n, p in preds.items()}
    cyclic[head].append(tail)
    with pytest.raises(CycleError) as caught:
        topological_order(cyclic)
    path = caught.value.path
    assert path[0] == path[-1] and len(path) >= 2
    assert len(set(path[:-1])) == len(path) - 1
    for before, after in zip(path, path[1:], strict=False):
        assert before in cyclic[after], f"{before} -> {after} is not an edge"
