"""The graph document: pydantic models with a versioned schema (``nodegraph/v1``).

    >>> from integration.graph.model import Graph
    >>> g = Graph.model_validate({
    ...     "name": "tiny",
    ...     "inputs": {"x": {"type": "int", "default": 2}},
    ...     "nodes": [{"id": "double", "type": "core.multiply", "params": {"b": 2}}],
    ...     "edges": [{"from": "inputs.x", "to": "double.a"}],
    ...     "outputs": {"y": "double.out"},
    ... })
    >>> g.edges[0].source, g.edges[0].target_port, g.outputs["y"].node
    ('inputs', 'a', 'double')

The models hold structure only. Whether types exist, ports match and the graph is
acyclic is the validator's job, so that every problem is reported in one pass.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from integration.graph.policy import ErrorPolicy
from integration.graph.transforms import TransformSpec
from integration.resources.requirements import ResourceRequirement

SCHEMA_VERSION = "nodegraph/v1"
GRAPH_INPUTS = "inputs"
"""The reserved source name for graph inputs in edges: ``from: inputs.NAME``."""

NODE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_:\-]*$"
# A port is an identifier; ComfyUI's dynamic inputs (V3) add dotted members to one
# (``values.a``, ``resize_type.width``), which only node types declaring them accept.
PORT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"
PORT_REF_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_:\-]*\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"
GRAPH_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_ .\-]*$"

PortRef = Annotated[
    str,
    Field(
        pattern=PORT_REF_PATTERN, max_length=401, description="A port reference: 'node_id.port'."
    ),
]


def split_ref(ref: str) -> tuple[str, str]:
    """``'node.port'`` -> ``('node', 'port')``; node ids never contain dots."""
    node_id, _, port = ref.partition(".")
    return node_id, port


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


class NodeOverrides(_Strict):
    """Per-node settings that override the node type's defaults."""

    tags: list[str] = Field(default_factory=list, description="Extra Prefect task tags.")
    pin_in_memory: bool = Field(
        default=False, description="Never spill this node's outputs to disk."
    )


class NodeSpec(_Strict):
    """One node of the graph: an instance of a node type with literal params."""

    id: str = Field(pattern=NODE_ID_PATTERN, max_length=200, description="Unique within the graph.")
    type: str = Field(
        min_length=1, max_length=200, description="A registered node type, e.g. 'core.add'."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Literal values for input ports."
    )
    title: str | None = Field(default=None, description="A display name.")
    overrides: NodeOverrides = Field(default_factory=NodeOverrides)
    on_error: ErrorPolicy | None = Field(
        default=None, description="Overrides the node type's error policy."
    )
    resources: ResourceRequirement | None = Field(
        default=None, description="Overrides the node type's resource requirement."
    )


class Edge(_Strict):
    """A wire from an output port (or a graph input) to an input port."""

    from_: PortRef = Field(alias="from", description="'node.port' or 'inputs.NAME'.")
    to: PortRef = Field(description="'node.port' of the consumer.")
    transform: str | dict[str, Any] | None = Field(
        default=None,
        description="A registered conversion: 'int', 'float', 'str', {index: 0}, "
        "{key: name}, {json_path: '$.a.b'}.",
    )

    @field_validator("transform")
    @classmethod
    def _transform_shape(cls, value: str | dict[str, Any] | None) -> Any:
        if value is not None:
            TransformSpec.parse(value)
        return value

    # Computed on access rather than kept in private attributes: pydantic routes private
    # attribute reads through __getattr__, which is slow on 10,000-edge graphs.
    @property
    def source(self) -> str:
        return self.from_.partition(".")[0]

    @property
    def source_port(self) -> str:
        return self.from_.partition(".")[2]

    @property
    def target(self) -> str:
        return self.to.partition(".")[0]

    @property
    def target_port(self) -> str:
        return self.to.partition(".")[2]

    @property
    def transform_spec(self) -> TransformSpec | None:
        return None if self.transform is None else TransformSpec.parse(self.transform)

    @property
    def from_graph_input(self) -> bool:
        return self.from_.partition(".")[0] == GRAPH_INPUTS


class GraphInput(_Strict):
    """A named, typed graph input; it becomes a Prefect flow parameter."""

    type: str = Field(default="any", description="A port type: int, float, str, ...")
    default: Any = Field(default=None, description="Makes the input optional.")
    description: str = ""
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class GraphOutput(_Strict):
    """A named reference to a node's output port."""

    from_: PortRef = Field(alias="from")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"from": value} if isinstance(value, str) else value

    @property
    def node(self) -> str:
        return split_ref(self.from_)[0]

    @property
    def port(self) -> str:
        return split_ref(self.from_)[1]


class Graph(_Strict):
    """A nodegraph document."""

    schema_: Literal["nodegraph/v1"] = Field(
        default=SCHEMA_VERSION, alias="schema", description="The document schema version."
    )
    name: str = Field(pattern=GRAPH_NAME_PATTERN, max_length=200)
    description: str = ""
    inputs: dict[str, GraphInput] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    outputs: dict[str, GraphOutput] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form extras.")

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, GraphInput]) -> dict[str, GraphInput]:
        for name in value:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(
                    f"input name {name!r} must be a Python identifier, because inputs "
                    "become flow parameters"
                )
        return value

    def node(self, node_id: str) -> NodeSpec:
        """The node with this id; ``KeyError`` if there is none."""
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(node_id)

    def to_document(self) -> dict[str, Any]:
        """The document as plain data, in the same shape it is written in."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json") | {
            "schema": SCHEMA_VERSION
        }


def graph_json_schema() -> dict[str, Any]:
    """The JSON Schema of a nodegraph document."""
    schema = Graph.model_json_schema(by_alias=True)
    schema["$id"] = f"https://nodegraph.dev/schema/{SCHEMA_VERSION}.json"
    schema["title"] = f"nodegraph document ({SCHEMA_VERSION})"
    return schema
