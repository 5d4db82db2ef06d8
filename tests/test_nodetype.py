"""Node authoring: ports from signatures, outputs from return annotations."""

from __future__ import annotations

import pickle
from typing import Annotated, Any, Literal, NamedTuple, TypedDict

import pytest

from integration.errors import NodeOutputError
from integration.graph import ExecutionContext, Port, node
from integration.graph.ports import OutputPort


class Pair(NamedTuple):
    first: int
    second: str


class Summary(TypedDict):
    size: int
    names: list


def test_inputs_come_from_parameters_and_defaults_make_them_optional():
    @node
    def scale(value: float, factor: int = 2, label: str | None = None) -> float:
        """Scale a value."""
        return value * factor

    assert list(scale.inputs) == ["value", "factor", "label"]
    assert scale.inputs["value"].required and scale.inputs["value"].type == "float"
    assert not scale.inputs["factor"].required and scale.inputs["factor"].default == 2
    assert scale.inputs["label"].type == "str" and scale.inputs["label"].nullable
    assert scale.description == "Scale a value."
    assert scale.invoke({"value": 1.5}) == {"out": 3.0}


def test_single_return_is_port_out():
    @node
    def one(x: int) -> int:
        return x

    assert list(one.outputs) == ["out"] and one.outputs["out"].type == "int"


def test_named_tuple_and_typed_dict_give_named_outputs():
    @node
    def pair(x: int) -> Pair:
        return Pair(x, str(x))

    @node
    def summary(names: list) -> Summary:
        return {"size": len(names), "names": names}

    assert {n: p.type for n, p in pair.outputs.items()} == {"first": "int", "second": "str"}
    assert pair.invoke({"x": 3}) == {"first": 3, "second": "3"}
    assert {n: p.type for n, p in summary.outputs.items()} == {"size": "int", "names": "list"}
    assert summary.invoke({"names": ["a"]}) == {"size": 1, "names": ["a"]}


def test_explicit_outputs_override_the_annotation():
    @node(outputs={"low": int, "high": int})
    def bounds(values: list) -> Any:
        return min(values), max(values)

    assert bounds.invoke({"values": [3, 1, 2]}) == {"low": 1, "high": 3}

    @node(outputs=[OutputPort("handle", "MODEL", cacheable=False, broadcast=True)])
    def load() -> Any:
        return object()

    assert not load.outputs["handle"].cacheable and load.outputs["handle"].broadcast
    assert load.outputs["handle"].type == "MODEL"


def test_none_return_means_no_outputs_and_missing_annotation_means_any():
    @node
    def sink(x: int) -> None:
        return None

    @node
    def untyped(x):
        return x

    assert sink.outputs == {} and sink.invoke({"x": 1}) == {}
    assert untyped.outputs["out"].type == "any" and untyped.inputs["x"].type == "any"


def test_execution_context_is_never_a_port():
    @node
    def uses_context(x: int, ctx: ExecutionContext) -> int:
        return x

    assert list(uses_context.inputs) == ["x"]
    assert uses_context.context_param == "ctx"


def test_port_constraints_from_annotated_literal_and_inputs():
    def even(value: int) -> bool:
        return value % 2 == 0

    @node(inputs={"steps": Port(validator=even, description="even only")})
    def sample(
        steps: Annotated[int, Port(min=2, max=10)],
        mode: Literal["fast", "slow"] = "fast",
    ) -> int:
        return steps

    steps = sample.inputs["steps"]
    assert (steps.min, steps.max, steps.description) == (2, 10, "even only")
    assert steps.check(1) == "must be >= 2, got 1"
    assert steps.check(11) == "must be <= 10, got 11"
    assert steps.check(3).startswith("rejected by validator even")
    assert steps.check(4) is None
    assert sample.inputs["mode"].choices == ("fast", "slow")
    assert sample.check_inputs({"steps": 4, "mode": "medium"}) == [
        "input 'mode' must be one of ['fast', 'slow'], got 'medium'"
    ]


def test_literal_checks_type_before_range():
    @node
    def clamp(x: Annotated[int, Port(min=0)]) -> int:
        return x

    port = clamp.inputs["x"]
    assert port.check_literal("3") == "expected int, got str '3'"
    assert port.check_literal(True) == "expected int, got bool True"
    assert port.check_literal(-1) == "must be >= 0, got -1"
    assert port.check_literal(5) is None


def test_version_defaults_to_a_source_hash_and_can_be_pinned():
    @node
    def a(x: int) -> int:
        return x + 1

    @node
    def b(x: int) -> int:
        return x + 2

    @node(version="2024.1")
    def c(x: int) -> int:
        return x

    assert len(a.version) == 16 and a.version != b.version
    assert c.version == "2024.1"


def test_bad_signatures_are_rejected_with_the_fix():
    with pytest.raises(TypeError, match="must be named parameters"):

        @node
        def star(*values: int) -> int:
            return 0

    with pytest.raises(TypeError, match="return a NamedTuple or TypedDict"):

        @node
        def tup(x: int) -> tuple[int, int]:
            return x, x

    with pytest.raises(TypeError, match="not parameters"):

        @node(inputs={"nope": Port(min=0)})
        def typo(x: int) -> int:
            return x


def test_output_mismatches_are_output_errors():
    @node
    def pair(x: int) -> Pair:
        return x  # type: ignore[return-value]

    @node
    def partial(x: int) -> Pair:
        return {"first": x}  # type: ignore[return-value]

    with pytest.raises(NodeOutputError, match="must return a mapping or a 2-tuple"):
        pair.invoke({"x": 1})
    with pytest.raises(NodeOutputError, match=r"no value for output\(s\) \['second'\]"):
        partial.invoke({"x": 1})


def test_node_types_from_packs_pickle_by_reference(registry):
    node_type = registry.get("core.add")
    payload = pickle.dumps(node_type)
    assert b"resolve_node_type" in payload and len(payload) < 400
    assert pickle.loads(payload) is node_type
