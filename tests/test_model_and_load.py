"""The graph document: schema, aliases, and load errors that name file and location."""

from __future__ import annotations

import json

import pytest

from integration.errors import GraphLoadError
from integration.graph import Graph, graph_json_schema, load_graph, parse_graph_text
from integration.graph.transforms import TransformSpec


def test_edges_read_from_and_to(fixture_path):
    graph = load_graph(fixture_path / "graphs" / "arithmetic.yaml")
    edge = next(e for e in graph.edges if e.to == "picked.a")
    assert (edge.source, edge.source_port, edge.target, edge.target_port) == (
        "parsed",
        "out",
        "picked",
        "a",
    )
    assert edge.transform_spec == TransformSpec("json_path", "$.a.b[1]")
    first = graph.edges[0]
    assert first.from_graph_input and first.source_port == "x"


def test_graph_inputs_and_outputs(fixture_path):
    graph = load_graph(fixture_path / "graphs" / "arithmetic.yaml")
    assert graph.inputs["x"].type == "int" and graph.inputs["x"].default == 17
    assert not graph.inputs["x"].required
    assert graph.outputs["total"].node == "total" and graph.outputs["total"].port == "out"
    assert graph.outputs["quotient_text"].description == "the quotient"


def test_input_without_default_is_required():
    graph = Graph.model_validate({"name": "g", "inputs": {"x": {"type": "int"}}})
    assert graph.inputs["x"].required
    explicit_none = Graph.model_validate({"name": "g", "inputs": {"x": {"default": None}}})
    assert not explicit_none.inputs["x"].required


def test_schema_defaults_to_v1_and_round_trips(fixture_path):
    graph = load_graph(fixture_path / "graphs" / "arithmetic.yaml")
    document = graph.to_document()
    assert document["schema"] == "nodegraph/v1"
    assert document["edges"][0] == {"from": "inputs.x", "to": "split.a"}
    assert load_graph(document) == graph
    assert load_graph(json.dumps(document)) == graph


def test_json_schema_describes_the_document():
    schema = graph_json_schema()
    assert schema["title"].endswith("(nodegraph/v1)")
    edge = schema["$defs"]["Edge"]["properties"]
    assert "from" in edge and "to" in edge and "transform" in edge
    assert "schema" in schema["properties"]


def test_yaml_syntax_error_names_file_line_and_column(fixture_path):
    path = fixture_path / "graphs" / "malformed.yaml"
    with pytest.raises(GraphLoadError) as caught:
        load_graph(path)
    ((where, message),) = caught.value.problems
    assert where == f"{path}:6:4"
    assert "invalid YAML" in message


def test_schema_errors_name_every_location_with_lines(fixture_path):
    path = fixture_path / "graphs" / "bad_schema.yaml"
    with pytest.raises(GraphLoadError) as caught:
        load_graph(path)
    problems = dict(caught.value.problems)
    assert problems[f"{path}:4:5 nodes[0].type"] == "Field required"
    assert "unknown field" in problems[f"{path}:8:13 nodes[1].colour"]
    assert problems[f"{path}:10:12 edges[0].from"] == (
        "expected a port reference 'node_id.port', got 'a'"
    )


def test_json_errors_name_line_and_column(fixture_path):
    path = fixture_path / "graphs" / "broken.json"
    with pytest.raises(GraphLoadError) as caught:
        load_graph(path)
    assert caught.value.problems[0][0] == f"{path}:4:36"


def test_unsupported_schema_version_says_which_is_supported(fixture_path):
    with pytest.raises(GraphLoadError, match="this nodegraph reads 'nodegraph/v1'"):
        load_graph(fixture_path / "graphs" / "future_schema.json")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- just\n- a list\n", "a graph document is a mapping, not list"),
        ("name: g\ninputs: {class: {type: int}}\n", "must be a Python identifier"),
        (
            "name: g\nedges: [{from: a.out, to: b.x, transform: {int: 1, str: 2}}]\n",
            "one-key mapping",
        ),
        ("name: 'bad/name'\n", "expected a name of letters"),
    ],
)
def test_bad_documents_are_load_errors(text, fragment):
    with pytest.raises(GraphLoadError) as caught:
        parse_graph_text(text, "doc.yaml")
    assert fragment in str(caught.value)


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(GraphLoadError, match="no such file"):
        load_graph(tmp_path / "absent.yaml")


def test_node_execution_error_carries_the_record():
    from integration.errors import ErrorType, NodeError, NodeExecutionError

    def broken():
        raise TimeoutError("too slow")

    try:
        broken()
    except TimeoutError as exc:
        record = NodeError.from_exception("n1", "core.add", exc)
    error = NodeExecutionError(record)
    assert (error.node_id, error.node_type, error.error_type) == (
        "n1",
        "core.add",
        ErrorType.TIMEOUT,
    )
    assert error.recoverable and error.message == "too slow"
    assert "in broken" in record.node_traceback and "too slow" in error.stacktrace
    assert str(error) == "n1 (core.add): timeout: too slow"
