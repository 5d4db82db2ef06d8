"""Property: whatever is done to a ComfyUI file, reading and checking it raises only
nodegraph's documented errors, within a time and memory budget.

The fixtures in tests/fixtures/comfy/ (UI 0.4, UI 1 with subgraphs, an API prompt) are
mutated: fields replaced by values of other shapes (huge, negative, infinite and NaN
numbers, strings, lists, objects, deep nesting), keys dropped, and links pointed back
at their own node. Each mutant goes through ``import_workflow`` and the check that
``nodegraph validate`` and runs do (``check_workflow``), and API mutants also through
``validate_prompt`` as given.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.comfy import ComfyExportError, ComfyWorkflowError, Signatures, import_workflow
from integration.comfy.validate import check_workflow, validate_prompt
from integration.graph.validate import GraphValidationError
from tests.reliability.support import FIXTURES, within_budget

DOCUMENTED = (ComfyWorkflowError, ComfyExportError, GraphValidationError)
FILES = {
    name: json.loads((FIXTURES / "comfy" / f"{name}.json").read_text())
    for name in ("ui_v04", "ui_v1_subgraph", "lazy_mix_api")
}


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


ODD_VALUES = st.one_of(
    st.sampled_from(
        [None, True, False, "", "x", -1, 0, 10**400, -(10**400), 2**63, 1e308, 1.5, -0.0]
        + [float("inf"), float("-inf"), float("nan"), [], {}, ["1", 0], ["1", -1], [[[]]]]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.integers(min_value=90, max_value=3000).map(_deep),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if path:
            yield path
        if len(path) >= 12:
            continue  # inside a deep value put there by an earlier mutation
        if isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


def _self_link(document: dict[str, Any], pick: int) -> None:
    """Point one link back at the node it feeds."""
    if "nodes" in document:
        links = document.get("links")
        if isinstance(links, list) and links:
            link = links[pick % len(links)]
            if isinstance(link, list) and len(link) >= 5:
                link[1] = link[3]
            elif isinstance(link, dict):
                link["origin_id"] = link.get("target_id")
        return
    linked = [
        (node_id, name)
        for node_id, entry in document.items()
        if isinstance(entry, dict) and isinstance(entry.get("inputs"), dict)
        for name, value in entry["inputs"].items()
        if isinstance(value, list) and len(value) == 2
    ]
    if linked:
        node_id, name = linked[pick % len(linked)]
        document[node_id]["inputs"][name][0] = node_id


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(FILES)))
    document = copy.deepcopy(FILES[name])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "self link"]))
        if action == "self link":
            _self_link(document, draw(st.integers(min_value=0, max_value=50)))
            continue
        paths = sorted(_paths(document), key=repr)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(document, path)
        if action == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(ODD_VALUES)
    return name, document


@pytest.fixture(scope="module")
def signatures(registry) -> Signatures:
    return Signatures.from_registry(registry)


def _read_and_check(document: dict[str, Any], registry: Any, signatures: Signatures) -> None:
    graph = import_workflow(document, signatures).graph
    check_workflow(graph, registry)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutant=mutants())
def test_mutated_comfy_files_raise_only_documented_errors(mutant, registry, signatures):
    name, document = mutant
    raised = within_budget(lambda: _read_and_check(document, registry, signatures))
    assert raised is None or isinstance(raised, DOCUMENTED), (name, repr(raised)[:2000])
    if name.endswith("_api"):
        raised = within_budget(lambda: validate_prompt(document, registry.comfy_types()))
        assert raised is None or isinstance(raised, DOCUMENTED), (name, repr(raised)[:2000])
