"""The graph model: documents, node types, the registry and validation.

    >>> from integration.graph import load_graph, bind, NodeRegistry
    >>> bound = bind(load_graph("flows/examples/hello.yaml"), NodeRegistry.default())
    >>> bound.order[:2]
    ['greeting', 'shout']

This package imports neither Prefect nor Dask: it is fast to import and testable alone.
"""

from integration.graph.context import ExecutionContext, RunInterrupted
from integration.graph.load import load_graph, parse_graph_text
from integration.graph.model import (
    SCHEMA_VERSION,
    Edge,
    Graph,
    GraphInput,
    GraphOutput,
    NodeSpec,
    graph_json_schema,
)
from integration.graph.nodetype import NodeType, node
from integration.graph.order import CycleError, levels, topological_order
from integration.graph.ports import InputPort, OutputPort, Port
from integration.graph.registry import NodeRegistry, PackSource, RegistryError
from integration.graph.transforms import TransformSpec
from integration.graph.validate import (
    Binding,
    BoundGraph,
    BoundNode,
    GraphInputError,
    GraphValidationError,
    Problem,
    bind,
    resolve_inputs,
)

__all__ = [
    "SCHEMA_VERSION",
    "Binding",
    "BoundGraph",
    "BoundNode",
    "CycleError",
    "Edge",
    "ExecutionContext",
    "Graph",
    "GraphInput",
    "GraphOutput",
    "GraphInputError",
    "GraphValidationError",
    "InputPort",
    "NodeRegistry",
    "NodeSpec",
    "NodeType",
    "OutputPort",
    "PackSource",
    "Port",
    "Problem",
    "RegistryError",
    "RunInterrupted",
    "TransformSpec",
    "bind",
    "graph_json_schema",
    "levels",
    "load_graph",
    "node",
    "parse_graph_text",
    "resolve_inputs",
    "topological_order",
]
