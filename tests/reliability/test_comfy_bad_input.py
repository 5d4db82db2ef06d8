"""Broken ComfyUI files: each kind that once escaped as a traceback (the regression
corpus in tests/fixtures/fuzz/comfy/, and big or deep files built here from a short
recipe) gets nodegraph's own error, naming the node and the field, fast and small."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration.comfy import ComfyWorkflowError, Signatures, import_workflow
from integration.comfy.shapes import MAX_NODES, MAX_SUBGRAPH_DEPTH
from integration.comfy.validate import check_workflow, validate_prompt
from integration.graph.limits import MAX_DEPTH
from integration.graph.validate import GraphValidationError
from tests.conftest import COMFY_TEST_PACK
from tests.reliability.support import FIXTURES, assert_no_traceback, cli, within_budget

CORPUS = FIXTURES / "fuzz" / "comfy"

# file -> what the message must name: the node (or link, or subgraph) and the field
EXPECTED = {
    "ui_properties_string": ("node 2 (TestRecord)", "properties must be an object"),
    "ui_inputs_int": ("node 2 (TestRecord)", "inputs must be a list"),
    "ui_outputs_string": ("node 1 (StubInt)", "outputs must be a list"),
    "ui_title_number": ("node 1 (StubInt)", "title must be a string"),
    "ui_slot_negative": ("links[0]", "origin_slot: a slot is a whole number from 0"),
    "ui_slot_infinity": ("links[0]", "target_slot: a slot is a whole number from 0"),
    "ui_slot_huge": ("links[0]", "origin_slot: a slot is a whole number from 0"),
    "ui_primitive_widgets_dict": ("node 3 (PrimitiveNode)", "widgets_values must be a list"),
    "ui_definitions_string": ("workflow", "definitions must be an object"),
    "ui_subgraph_nodes_int": ("subgraph 'Inner'", "nodes must be a list"),
    "ui_subgraph_links_string": ("subgraph 'Inner'", "links must be a list"),
    "api_class_type_list": ("node 2", "class_type must be a non-empty string"),
    "api_title_number": ("node 1 (StubInt)", "title must be a string"),
    "api_slot_infinity": ("node 2 (TestRecord) input 'value'", "a slot is a whole number"),
    "api_slot_huge": ("node 2 (TestRecord) input 'value'", "a slot is a whole number"),
    "api_inputs_string": ("node 2 (TestRecord)", "inputs must be an object"),
}
SELF_LINKED = ["ui_self_link", "api_self_link"]


@pytest.fixture(scope="module")
def signatures(registry) -> Signatures:
    return Signatures.from_registry(registry)


def test_the_corpus_holds_one_file_per_kind():
    assert sorted(p.stem for p in CORPUS.glob("*.json")) == sorted([*EXPECTED, *SELF_LINKED])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_broken_file_is_reported_by_node_and_field(name, signatures):
    raised = within_budget(lambda: import_workflow(CORPUS / f"{name}.json", signatures))
    assert isinstance(raised, ComfyWorkflowError), repr(raised)
    where, field = EXPECTED[name]
    text = str(raised)
    assert where in text and field in text, text
    assert len(text) < 1000  # values are cut short, never shown whole


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("api_")))
def test_prompt_validation_reports_shapes_as_node_errors(name, registry):
    prompt = json.loads((CORPUS / f"{name}.json").read_text())
    raised = within_budget(lambda: validate_prompt(prompt, registry.comfy_types()))
    assert isinstance(raised, GraphValidationError), repr(raised)
    node = EXPECTED[name][0].split()[1]
    errors = raised.node_errors[node]["errors"]
    assert errors[0]["type"] == "invalid_prompt"
    assert EXPECTED[name][1] in errors[0]["message"]


@pytest.mark.parametrize("name", SELF_LINKED)
def test_a_node_linked_to_itself_is_a_dependency_cycle(name, registry, signatures):
    graph = import_workflow(CORPUS / f"{name}.json", signatures).graph
    raised = within_budget(lambda: check_workflow(graph, registry))
    assert isinstance(raised, GraphValidationError), repr(raised)
    assert raised.node_errors["2"]["errors"][0]["type"] == "dependency_cycle"


# -- big and deep files, from a recipe ------------------------------------------------


def _stub(node_id: int, links: list[int]) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "StubInt",
        "inputs": [],
        "outputs": [{"name": "INT", "type": "INT", "links": links}],
        "widgets_values": [3],
    }


def _record(node_id: int, link: int) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "TestRecord",
        "inputs": [{"name": "value", "type": "*", "link": link}],
        "widgets_values": ["x"],
    }


def reroute_chain(length: int) -> dict[str, Any]:
    """StubInt -> ``length`` Reroutes -> TestRecord."""
    nodes = [_stub(1, [1])]
    links = []
    for link in range(1, length + 1):
        reroute = {"id": link + 1, "type": "Reroute", "inputs": [{"name": "", "link": link}]}
        nodes.append(reroute)
        links.append([link, link, 0, link + 1, 0, "INT"])
    nodes.append(_record(length + 2, length + 1))
    links.append([length + 1, length + 1, 0, length + 2, 0, "INT"])
    return {"version": 0.4, "nodes": nodes, "links": links}


def nested_subgraphs(depth: int, fan: int = 1) -> dict[str, Any]:
    """Subgraph ``level 0`` holds ``fan`` instances of ``level 1``, and so on; the last
    level holds one StubInt."""
    definitions = []
    for level in range(depth):
        if level == depth - 1:
            inner = [_stub(1, [])]
        else:
            inner = [{"id": k + 1, "type": f"level-{level + 1}"} for k in range(fan)]
        definitions.append(
            {"id": f"level-{level}", "name": f"level {level}", "nodes": inner, "links": []}
        )
    return {
        "version": 1,
        "nodes": [{"id": 1, "type": "level-0"}],
        "links": [],
        "definitions": {"subgraphs": definitions},
    }


def test_600_chained_reroutes_import_without_recursion(signatures):
    graph = import_workflow(reroute_chain(600), signatures).graph
    assert [(e.from_, e.to) for e in graph.edges] == [("1.out0", "602.value")]


def test_nested_subgraphs_flatten_iteratively_and_1000_are_refused_naming_the_limit(
    signatures,
):
    below = MAX_SUBGRAPH_DEPTH // 2
    graph = import_workflow(nested_subgraphs(below), signatures).graph
    assert [n.id for n in graph.nodes] == [":".join(["1"] * (below + 1))]
    raised = within_budget(lambda: import_workflow(nested_subgraphs(1000), signatures))
    assert isinstance(raised, ComfyWorkflowError), repr(raised)
    assert f"subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH} levels" in str(raised)


def test_a_subgraph_bomb_is_refused_before_it_is_built(signatures):
    # ten instances per level, eight levels: 10^7 nodes once flattened
    raised = within_budget(lambda: import_workflow(nested_subgraphs(8, fan=10), signatures))
    assert isinstance(raised, ComfyWorkflowError), repr(raised)
    assert f"more than {MAX_NODES} nodes once its subgraphs are flattened" in str(raised)


def test_json_nested_deeper_than_the_limit_is_refused(tmp_path, registry, signatures):
    path = tmp_path / "deep.json"
    deep = "[" * 5000 + "]" * 5000
    path.write_text('{"1": {"class_type": "StubInt", "inputs": {"value": ' + deep + "}}}")
    raised = within_budget(lambda: import_workflow(path, signatures))
    assert isinstance(raised, ComfyWorkflowError), repr(raised)
    assert f"nested deeper than {MAX_DEPTH} levels" in str(raised)
    prompt = json.loads(path.read_text().replace(deep, "[]"))
    for _ in range(5000):
        prompt["1"]["inputs"]["value"] = [prompt["1"]["inputs"]["value"]]
    raised = within_budget(lambda: validate_prompt(prompt, registry.comfy_types()))
    assert isinstance(raised, GraphValidationError), repr(raised)
    assert raised.problems[0].code == "invalid_prompt"
    assert f"nested deeper than {MAX_DEPTH} levels" in raised.problems[0].message


def test_a_3000_node_chain_validates_without_recursion(registry, signatures):
    prompt: dict[str, Any] = {"0": {"class_type": "StubInt", "inputs": {"value": 1}}}
    for index in range(1, 3000):
        prompt[str(index)] = {
            "class_type": "TestIntMathOperation",
            "inputs": {"a": [str(index - 1), 0], "b": 1, "operation": "add"},
        }
    prompt["end"] = {"class_type": "TestRecord", "inputs": {"label": "x", "value": ["2999", 0]}}
    graph = import_workflow(prompt, signatures).graph
    valid, _ = check_workflow(graph, registry)
    assert valid.outputs == ["end"] and len(valid.prompt) == 3001


def test_3000_outputs_linked_through_slots_they_lack_are_each_reported_once(registry):
    # every TestRecord is an output node with no outputs, linked to the one before
    prompt = {
        str(index): {"class_type": "TestRecord", "inputs": {"value": [str(index - 1), 0]}}
        for index in range(3000)
    }
    raised = within_budget(lambda: validate_prompt(prompt, registry.comfy_types()))
    assert isinstance(raised, GraphValidationError), repr(raised)
    errors = raised.node_errors
    assert len(errors) == 3000
    # a link to a slot the node lacks is the problem, not a dependency
    assert all(errors[str(i)]["dependent_outputs"] == [str(i)] for i in range(3000))


# -- the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name", "expected"),
    [
        ("comfy import {}", "ui_slot_huge", "origin_slot"),
        ("validate {} --json", "ui_properties_string", "properties must be an object"),
        ("validate {} --json", "ui_self_link", "dependency_cycle"),
    ],
)
def test_the_cli_reports_broken_files_without_a_traceback(command, name, expected):
    done = cli(*command.format(CORPUS / f"{name}.json").split(), "--nodes", str(COMFY_TEST_PACK))
    assert done.returncode == 1, done.stderr
    assert_no_traceback(done.stdout, done.stderr)
    assert expected in done.stdout + done.stderr
