"""ComfyUI workflow files: read either format into a ``Graph``, and write both back.

    >>> prompt = {
    ...     "1": {"class_type": "StubInt", "inputs": {"value": 5}},
    ...     "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 2}},
    ... }
    >>> graph = import_workflow(prompt).graph
    >>> [(e.from_, e.to) for e in graph.edges]
    [('1.out0', '2.a')]
    >>> to_api(graph) == prompt
    True

Two formats exist:

- **API** (what ``POST /prompt`` takes): ``{id: {class_type, inputs, _meta}}``, where an
  input is a value or a link ``[source id, output slot]``.
- **UI** (what the editor saves; versions 0.4 and 1): ``nodes`` with ``widgets_values``,
  ``links``, ``groups``, subgraph ``definitions``, and virtual nodes (Reroute,
  PrimitiveNode, notes) that never run.

A UI workflow is reduced the way the frontend's ``graphToPrompt`` reduces it before
queueing: subgraphs are flattened (inner ids become ``outer:inner``), reroutes and
primitives are resolved, muted nodes (mode 2) are dropped and bypassed nodes (mode 4)
pass a matching-type input through. Widget values are named by the class's
``INPUT_TYPES`` order when its signature is known; otherwise they are kept by position
(params ``#0``, ``#1``, ...) and the import says so.

In the graph, output slot ``n`` of a node is the port ``outN``. What the graph model has
no field for (positions, colours, groups, unknown keys) is kept under
``graph.metadata["comfy"]`` and written back on export.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from integration.comfy.nodes import output_port, output_slot
from integration.comfy.runtime import is_link
from integration.comfy.shapes import (
    MAX_NODES,
    MAX_SUBGRAPH_DEPTH,
    api_entry_problems,
    body_problems,
    definitions_problems,
    document_problem,
    name_of,
    shown,
    too_deep,
)
from integration.comfy.signatures import Signature, Signatures
from integration.errors import GraphLoadError, NodegraphError, summarize_value
from integration.graph.gcpause import gc_paused
from integration.graph.limits import check_size
from integration.graph.model import (
    GRAPH_NAME_PATTERN,
    NODE_ID_PATTERN,
    PORT_PATTERN,
    Edge,
    Graph,
    NodeSpec,
)
from integration.graph.order import levels, topological_order

WorkflowFormat = Literal["api", "ui"]

VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
"""Frontend-only node types: they never reach the backend."""
MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
POSITIONAL = "#"
"""Params named ``#0``, ``#1``, ... hold widget values whose names were not known."""

_NODE_ID = re.compile(NODE_ID_PATTERN)
_GRAPH_NAME = re.compile(GRAPH_NAME_PATTERN)
_PORT = re.compile(PORT_PATTERN)
_UI_NODE_KEYS = frozenset(
    {
        "id",
        "type",
        "pos",
        "size",
        "flags",
        "order",
        "mode",
        "inputs",
        "outputs",
        "properties",
        "widgets_values",
        "title",
        "color",
        "bgcolor",
        "shape",
    }
)
_KEPT_UI_KEYS = ("pos", "size", "flags", "color", "bgcolor", "shape", "properties")
_STRUCTURAL_KEYS = frozenset(
    {
        "nodes",
        "links",
        "last_node_id",
        "last_link_id",
        "version",
        "state",
        "definitions",
        "reroutes",
        "id",
        "revision",
    }
)
DEFAULT_SIZE = (320, 80)
ORIGINAL_ID = "nodegraph_id"
"""Property holding a node's graph id when it is not a UI integer id (``5:3``)."""
SOCKET_VALUES = "nodegraph_socket_values"
"""Property holding literal values of inputs the editor draws as sockets only (an API
prompt may give an Autogrow slot a constant), so that a UI file loses none of them."""


class ComfyWorkflowError(NodegraphError, ValueError):
    """A workflow file cannot be read; ``problems`` says which node or link is at fault."""

    SHOWN = 50
    """At most this many problems are written into the message; ``problems`` has all."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = problems[: self.SHOWN]
        if len(problems) > self.SHOWN:
            lines = [*lines, f"... and {len(problems) - self.SHOWN} more problem(s)"]
        super().__init__(f"cannot read ComfyUI workflow {source}:\n  " + "\n  ".join(lines))


@dataclass
class Imported:
    """An imported workflow: the graph, and what the import could not check or keep."""

    graph: Graph
    format: WorkflowFormat
    warnings: list[str] = field(default_factory=list)


# -- reading ------------------------------------------------------------------------


def workflow_format(data: Any) -> WorkflowFormat | None:
    """``"ui"`` or ``"api"`` when ``data`` has a ComfyUI workflow's shape, else ``None``."""
    if not isinstance(data, Mapping):
        return None
    if isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list):
        return "ui"
    if "prompt" in data and isinstance(data["prompt"], Mapping) and "schema" not in data:
        return workflow_format(data["prompt"])  # a POST /prompt body
    if data and all(
        isinstance(v, Mapping) and "class_type" in v and "inputs" in v for v in data.values()
    ):
        return "api"
    return None


def read_workflow(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The JSON of a workflow file (or data), and a name for it in messages."""
    if isinstance(source, Mapping):
        _check_limits(source, "<data>")
        return dict(source), "<data>"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComfyWorkflowError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComfyWorkflowError(str(path), [f"cannot read: {exc}"]) from None
    try:
        check_size(text, str(path))
        data = json.loads(text)
    except GraphLoadError as exc:
        raise ComfyWorkflowError(str(path), [message for _, message in exc.problems]) from None
    except json.JSONDecodeError as exc:
        raise ComfyWorkflowError(
            str(path), [f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        ) from None
    except RecursionError:
        raise ComfyWorkflowError(str(path), [too_deep()]) from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise ComfyWorkflowError(str(path), [f"not readable JSON: {exc}"]) from None
    _check_limits(data, str(path))
    if workflow_format(data) is None:
        raise ComfyWorkflowError(
            str(path),
            [
                "neither a UI workflow (nodes and links) nor an API prompt "
                "({id: {class_type, inputs}})"
            ],
        )
    return data, str(path)


def _check_limits(data: Any, where: str) -> None:
    problem = document_problem(data)
    if problem:
        raise ComfyWorkflowError(where, [problem])


def import_workflow(
    source: str | Path | Mapping[str, Any],
    signatures: Signatures | None = None,
    name: str | None = None,
) -> Imported:
    """Read a UI or API workflow into a ``Graph``.

    ``signatures`` (from loaded packs or an ``/object_info`` file) name widget values
    and check links; without them values are kept by position, with a warning.
    """
    data, where = read_workflow(source)
    signatures = signatures or Signatures()
    kind = workflow_format(data)
    if kind is None:
        raise ComfyWorkflowError(where, ["not a ComfyUI workflow"])
    body = data.get("prompt")
    if kind == "api" and isinstance(body, Mapping) and "class_type" not in body:
        data = dict(body)  # a POST /prompt body, not a prompt with a node named "prompt"
    graph_name = name or graph_name_for(source)
    if (
        not isinstance(graph_name, str)
        or len(graph_name) > 200
        or not _GRAPH_NAME.match(graph_name)
    ):
        raise ComfyWorkflowError(
            where, [f"the graph name {shown(graph_name)} is not a valid graph name"]
        )
    with gc_paused():  # many small objects and no cycles: collections only cost time
        if kind == "api":
            graph, warnings = _api_to_graph(data, where, signatures, graph_name)
        else:
            graph, warnings = _UiReader(data, where, signatures).graph(graph_name)
    return Imported(graph, kind, warnings)


def graph_name_for(source: Any) -> str:
    """A graph name from a workflow's file name (``workflow`` for data)."""
    if isinstance(source, str | Path):
        stem = re.sub(r"[^A-Za-z0-9_ .\-]", "_", Path(source).stem).strip(" .-") or "workflow"
        return stem[:200]
    return "workflow"


def load_document(data: dict[str, Any], source: str, signatures: Signatures | None) -> Graph | None:
    """The graph of a ComfyUI workflow, or ``None`` for data of another format: the
    document loader through which ``load_graph`` reads ComfyUI files."""
    if workflow_format(data) is None:
        return None
    name = graph_name_for(source) if not source.startswith("<") else None
    return import_workflow(data, signatures, name=name).graph


def _check_node_id(node_id: str, where: str, problems: list[str]) -> None:
    if not _NODE_ID.match(node_id):
        problems.append(
            f"node id {node_id!r}: nodegraph ids are letters, digits, '_', '-' and ':' (in {where})"
        )


def _api_to_graph(
    prompt: Mapping[str, Any], where: str, signatures: Signatures, name: str
) -> tuple[Graph, list[str]]:
    problems: list[str] = []
    for node_id, entry in prompt.items():
        _check_node_id(str(node_id), where, problems)
        problems.extend(api_entry_problems(str(node_id), entry))
    if problems:
        raise ComfyWorkflowError(where, problems)
    warnings: list[str] = []
    nodes: list[NodeSpec] = []
    edges: list[Edge] = []
    kept: dict[str, Any] = {}
    for node_id, entry in prompt.items():
        node_id = str(node_id)
        class_type = entry["class_type"]
        inputs = entry["inputs"]
        params: dict[str, Any] = {}
        signature = signatures.get(class_type)
        for input_name, value in inputs.items():
            if is_link(value):
                source_id, slot = str(value[0]), value[1]
                problem = _link_problem(prompt, signatures, source_id, slot)
                if problem:
                    problems.append(
                        f"node {node_id} ({class_type}) input {input_name!r}: {problem}"
                    )
                    continue
                if signature is not None and signature.input(input_name) is None:
                    warnings.append(_undeclared(node_id, class_type, input_name))
                if not _PORT.match(input_name):
                    problems.append(
                        f"node {node_id} ({class_type}) input {input_name!r}: a linked "
                        "input's name must be an identifier, or identifiers joined by dots, "
                        "to become a port"
                    )
                    continue
                edge = _edge(f"{source_id}.{output_port(int(slot))}", f"{node_id}.{input_name}")
                if isinstance(edge, str):
                    problems.append(f"node {name_of(node_id)} ({class_type}) input: {edge}")
                    continue
                edges.append(edge)
            else:
                params[input_name] = value
        meta = entry.get("_meta") if isinstance(entry.get("_meta"), Mapping) else {}
        extra = {k: v for k, v in entry.items() if k not in ("class_type", "inputs", "_meta")}
        meta_extra = {k: v for k, v in meta.items() if k != "title"}
        if extra or meta_extra:
            kept[node_id] = {"extra": extra} | ({"meta": meta_extra} if meta_extra else {})
        if problems:
            continue
        spec = _node_spec(node_id, class_type, params, meta.get("title"))
        if isinstance(spec, str):
            problems.append(spec)
            continue
        nodes.append(spec)
    if problems:
        raise ComfyWorkflowError(where, problems)
    metadata: dict[str, Any] = {"format": "api"}
    if kept:
        metadata["nodes"] = kept
    graph = _graph(where, name=name, nodes=nodes, edges=edges, metadata={"comfy": metadata})
    return graph, warnings + _unsigned_warning(nodes, signatures)


def _node_spec(node_id: str, class_type: str, params: dict[str, Any], title: Any) -> NodeSpec | str:
    """The node, or what the graph model refuses in it (a length limit, say), by field."""
    try:
        return NodeSpec(id=node_id, type=class_type, params=params, title=title)
    except ValidationError as exc:
        return f"node {name_of(node_id)} ({name_of(class_type)}): {_first_error(exc)}"


def _edge(source: str, target: str) -> Edge | str:
    """The edge, or what the graph model refuses in it."""
    try:
        return Edge.model_validate({"from": source, "to": target})
    except ValidationError as exc:
        return f"{name_of(source)} -> {name_of(target)}: {_first_error(exc)}"


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"


def _graph(where: str, **fields: Any) -> Graph:
    # Every field was checked on the way in; this turns a check that was missed into
    # the workflow error it should have been, not a pydantic traceback.
    try:
        return Graph(**fields)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise ComfyWorkflowError(where, problems) from None


def _undeclared(node_id: str, class_type: str, input_name: str) -> str:
    return (
        f"node {node_id} ({class_type}): input {input_name!r} is not declared by the "
        "class; it is passed as a keyword argument, as ComfyUI does"
    )


def _link_problem(
    prompt: Mapping[str, Any], signatures: Signatures, source_id: str, slot: Any
) -> str | None:
    if source_id not in prompt:
        return f"links to node {name_of(source_id)}, which is not in the workflow"
    signature = signatures.get(prompt[source_id]["class_type"])
    if signature is not None and int(slot) >= len(signature.return_types):
        return (
            f"links to output slot {int(slot)} of node {source_id} "
            f"({signature.class_type}), which has {len(signature.return_types)} output(s)"
        )
    return None


def _unsigned_warning(nodes: Iterable[NodeSpec], signatures: Signatures) -> list[str]:
    unknown = sorted({n.type for n in nodes if n.type not in signatures})
    if not unknown:
        return []
    return [
        "no signature for " + ", ".join(unknown) + ": their widgets and links were not "
        "checked (load their packs, or pass a signature file from a ComfyUI /object_info)"
    ]


# -- the UI format --------------------------------------------------------------------


@dataclass
class _Link:
    id: Any
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any = "*"


@dataclass
class _Scope:
    """The top-level workflow, or one subgraph instance's copy of its definition."""

    prefix: str
    nodes: dict[str, dict[str, Any]]
    links: dict[str, _Link]
    parent: _Scope | None = None
    instance: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None
    chain: tuple[str, ...] = ()
    input_values: dict[str, Any] = field(default_factory=dict)
    """Values of the instance's widgets for subgraph inputs, by input name."""
    promoted: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Promoted widget values (``proxyWidgets``), by inner node id and widget name."""
    offset: tuple[float, float] = (0.0, 0.0)
    """Where the instance sits on the canvas: inner positions are shifted by it."""

    def flat_id(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"


@dataclass
class _Resolved:
    """Where an input's value comes from after virtual nodes are resolved."""

    node: str | None = None
    slot: int = 0
    value: Any = None
    is_value: bool = False


class _UiReader:
    def __init__(self, data: Mapping[str, Any], where: str, signatures: Signatures) -> None:
        self.data = data
        self.where = where
        self.signatures = signatures
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.definitions: dict[str, Mapping[str, Any]] = {}
        self.scopes: dict[str, _Scope] = {}
        """Subgraph instances' scopes by prefix: each is built once, however often
        links pass through it."""
        self.ids: set[str] = set()
        self.nodes: list[NodeSpec] = []
        self.edges: list[Edge] = []
        self.kept: dict[str, Any] = {}
        self.unsigned: set[str] = set()

    def graph(self, name: str) -> tuple[Graph, list[str]]:
        self._check_shapes()
        top = self._scope("", self.data, None, None, ())
        if not self.problems:
            self._read_scopes(top)
        if self.problems:
            raise ComfyWorkflowError(self.where, self.problems)
        workflow = {k: v for k, v in self.data.items() if k not in _STRUCTURAL_KEYS}
        metadata: dict[str, Any] = {"format": "ui"}
        if workflow:
            metadata["workflow"] = workflow
        if self.kept:
            metadata["nodes"] = self.kept
        graph = _graph(
            self.where, name=name, nodes=self.nodes, edges=self.edges, metadata={"comfy": metadata}
        )
        if self.unsigned:
            self.warnings.append(
                "no signature for " + ", ".join(sorted(self.unsigned)) + ": their "
                "widget values are kept by position (params #0, #1, ...) and their links "
                "were not checked (load their packs, or pass a signature file from a "
                "ComfyUI /object_info)"
            )
        return graph, self.warnings

    def _check_shapes(self) -> None:
        """Every field the reader uses, in the workflow and each subgraph definition,
        checked before any is used: the reader below trusts their shapes."""
        problems = definitions_problems(self.data) + body_problems(self.data, "workflow")
        if not problems:
            subgraphs = (self.data.get("definitions") or {}).get("subgraphs") or []
            self.definitions = {str(d["id"]): d for d in subgraphs}
            for definition_id, definition in self.definitions.items():
                label = f"subgraph {name_of(definition.get('name') or definition_id)!r}"
                problems.extend(body_problems(definition, label))
        if not problems and self._flattened_size() > MAX_NODES:
            problems.append(
                f"workflow: more than {MAX_NODES} nodes once its subgraphs are flattened "
                "(nodegraph's limit)"
            )
        if problems:
            raise ComfyWorkflowError(self.where, problems)

    def _flattened_size(self) -> int:
        """How many nodes the workflow has with every subgraph instance expanded (muted
        ones too), counted per definition, inner ones first, before anything is built:
        a few instances nested a few times multiply into millions."""
        nodes_of = {d: self.definitions[d].get("nodes") or [] for d in self.definitions}
        sizes: dict[str, int] = {}
        visiting: set[str] = set()
        for start in nodes_of:
            stack = [(start, False)]
            while stack:
                definition_id, inner_done = stack.pop()
                if inner_done:
                    total = sum(
                        sizes.get(n["type"], 0) if n["type"] in nodes_of else 1
                        for n in nodes_of[definition_id]
                    )
                    sizes[definition_id] = min(total, MAX_NODES + 1)
                    continue
                if definition_id in sizes or definition_id in visiting:
                    continue  # done, or a subgraph inside itself, which the reader reports
                visiting.add(definition_id)
                stack.append((definition_id, True))
                stack.extend(
                    (n["type"], False) for n in nodes_of[definition_id] if n["type"] in nodes_of
                )
        top = self.data.get("nodes") or []
        return sum(sizes.get(n["type"], 0) if n["type"] in nodes_of else 1 for n in top)

    # structure

    def _scope(
        self,
        prefix: str,
        body: Mapping[str, Any],
        parent: _Scope | None,
        instance: dict[str, Any] | None,
        chain: tuple[str, ...],
    ) -> _Scope:
        label = f"subgraph {chain[-1]!r}" if chain else "workflow"
        nodes: dict[str, dict[str, Any]] = {}
        for node in body.get("nodes") or []:
            node_id = str(node["id"])
            if node_id in nodes:
                self.problems.append(f"{label}: node id {name_of(node_id)} is used twice")
            nodes[node_id] = dict(node)
        links: dict[str, _Link] = {}
        for raw in body.get("links") or []:
            link = _parse_link(raw)
            links[str(link.id)] = link
        scope = _Scope(prefix, nodes, links, parent, instance, None, chain)
        for link in links.values():
            self._check_link(scope, link, label)
        return scope

    def _check_link(self, scope: _Scope, link: _Link, label: str) -> None:
        for end, node_id, special in (
            ("comes from", link.origin_id, SUBGRAPH_INPUT),
            ("goes to", link.target_id, SUBGRAPH_OUTPUT),
        ):
            if str(node_id) not in scope.nodes and not (scope.chain and node_id == special):
                self.problems.append(
                    f"{label}: link {name_of(link.id)} {end} node {name_of(node_id)}, "
                    "which does not exist"
                )
        origin = scope.nodes.get(str(link.origin_id))
        outputs = origin.get("outputs") if origin else None
        if isinstance(outputs, list) and outputs and link.origin_slot >= len(outputs):
            self.problems.append(
                f"{label}: link {name_of(link.id)} comes from output slot {link.origin_slot} "
                f"of node {name_of(link.origin_id)} ({name_of(origin['type'])}), which has "
                f"{len(outputs)} output(s)"
            )
        target = scope.nodes.get(str(link.target_id))
        inputs = target.get("inputs") if target else None
        if target is not None and (not isinstance(inputs, list) or link.target_slot >= len(inputs)):
            count = len(inputs) if isinstance(inputs, list) else 0
            self.problems.append(
                f"{label}: link {name_of(link.id)} goes to input slot {link.target_slot} of "
                f"node {name_of(link.target_id)} ({name_of(target['type'])}), which has "
                f"{count} input(s)"
            )

    def _read_scopes(self, top: _Scope) -> None:
        """Read every real node, depth first in file order, a subgraph instance's nodes
        where the instance is; with a stack, so nesting costs no recursion."""
        stack = [iter([(top, node_id, node) for node_id, node in top.nodes.items()])]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            scope, node_id, node = step
            node_type = node["type"]
            if node_type in VIRTUAL_TYPES or (node.get("mode") or 0) in (MUTED, BYPASSED):
                continue
            if node_type in self.definitions:
                inner = self._enter(scope, node)
                if inner is not None:
                    stack.append(iter([(inner, i, n) for i, n in inner.nodes.items()]))
                continue
            self._read_node(scope, node_id, node)

    def _enter(self, scope: _Scope, instance: dict[str, Any]) -> _Scope | None:
        prefix = f"{scope.flat_id(instance['id'])}:"
        if prefix in self.scopes:
            return self.scopes[prefix]
        definition_id = str(instance["type"])
        if definition_id in scope.chain:
            names = [self._definition_name(d) for d in (*scope.chain, definition_id)]
            self.problems.append(
                f"node {name_of(scope.flat_id(instance['id']))}: subgraph {names[-1]!r} "
                f"contains itself ({' -> '.join(names)})"
            )
            return None
        if len(scope.chain) >= MAX_SUBGRAPH_DEPTH:
            self.problems.append(
                f"node {name_of(scope.flat_id(instance['id']))}: subgraphs nest deeper than "
                f"{MAX_SUBGRAPH_DEPTH} levels, nodegraph's limit"
            )
            return None
        definition = self.definitions[definition_id]
        inner = self._scope(prefix, definition, scope, instance, (*scope.chain, definition_id))
        inner.definition = definition
        inner.input_values, inner.promoted = _instance_values(instance)
        x, y = _xy(instance.get("pos"))
        inner.offset = (scope.offset[0] + x, scope.offset[1] + y)
        self.scopes[prefix] = inner
        return inner

    def _definition_name(self, definition_id: str) -> str:
        return name_of(self.definitions.get(definition_id, {}).get("name") or definition_id)

    # one node

    def _read_node(self, scope: _Scope, node_id: str, node: dict[str, Any]) -> None:
        flat_id = scope.flat_id(node_id)
        properties = dict(node.get("properties") or {})
        flat_id = properties.pop(ORIGINAL_ID, flat_id)
        socket_values = properties.pop(SOCKET_VALUES, None)
        _check_node_id(flat_id, self.where, self.problems)
        if flat_id in self.ids:
            self.problems.append(
                f"node id {name_of(flat_id)} is used twice once subgraphs are flattened (check "
                f"properties.{ORIGINAL_ID})"
            )
        self.ids.add(flat_id)
        class_type = node["type"]
        signature = self.signatures.get(class_type)
        params, controls = self._widget_params(flat_id, node, signature, scope)
        params.update(scope.promoted.get(node_id, {}))
        if isinstance(socket_values, Mapping):
            params.update(socket_values)
        linked_widgets: dict[str, Any] = {}
        input_types: dict[str, Any] = {}
        for entry in node.get("inputs") or []:
            input_name = entry["name"]
            widget = entry.get("widget")
            if isinstance(widget, Mapping) and widget.get("name"):
                input_name = widget["name"]
            link_id = entry.get("link")
            if link_id is None:
                continue
            link = scope.links.get(str(link_id))
            if link is None:
                self.problems.append(
                    f"node {name_of(flat_id)} ({name_of(class_type)}) input {input_name!r}: "
                    f"link {name_of(link_id)} is not in the workflow's links"
                )
                continue
            resolved = self._origin(scope, link, entry.get("type", "*"))
            if resolved is None:
                continue  # fed by a muted node or an unconnected bypass: left unset
            if resolved.is_value:
                params[input_name] = resolved.value
                continue
            if input_name in params:
                linked_widgets[input_name] = params.pop(input_name)
            if not _PORT.match(input_name):
                self.problems.append(
                    f"node {name_of(flat_id)} ({name_of(class_type)}) input {input_name!r}: a "
                    "linked input's name must be an identifier, or identifiers joined by dots, "
                    "to become a port"
                )
                continue
            assert resolved.node is not None
            if not _NODE_ID.match(resolved.node) or not _NODE_ID.match(flat_id):
                continue  # the node with that id reports it when it is read
            if signature is not None and signature.input(input_name) is None:
                self.warnings.append(_undeclared(flat_id, class_type, input_name))
            input_types[input_name] = entry.get("type", "*")
            edge = _edge(f"{resolved.node}.{output_port(resolved.slot)}", f"{flat_id}.{input_name}")
            if isinstance(edge, str):
                self.problems.append(
                    f"node {name_of(flat_id)} ({name_of(class_type)}) input: {edge}"
                )
                continue
            self.edges.append(edge)
        # Every UI node is kept with a position, size, flags and properties (defaults
        # where the file has none), so that writing the graph back and reading it again
        # gives the same graph.
        kept: dict[str, Any] = {
            k: node[k] for k in _KEPT_UI_KEYS if k in node and k != "properties"
        }
        x, y = _xy(kept.get("pos"))
        if scope.chain:
            kept["pos"] = [x + scope.offset[0], y + scope.offset[1]]
        kept.setdefault("pos", [x, y])
        kept.setdefault("size", list(DEFAULT_SIZE))
        kept.setdefault("flags", {})
        kept["properties"] = {"Node name for S&R": class_type, **properties}
        if node.get("mode") or 0:
            kept["mode"] = node["mode"]
        extra = {k: v for k, v in node.items() if k not in _UI_NODE_KEYS}
        if extra:
            kept["ui_extra"] = extra
        outputs = [
            {"name": o.get("name", ""), "type": o.get("type", "*")}
            for o in node.get("outputs") or []
            if isinstance(o, Mapping)
        ]
        if outputs:
            kept["outputs"] = outputs
        if input_types:
            kept["inputs"] = input_types
        if controls:
            kept["controls"] = controls
        if linked_widgets:
            kept["linked_widgets"] = linked_widgets
        self.kept[flat_id] = kept
        spec = _node_spec(flat_id, class_type, params, node.get("title"))
        if isinstance(spec, str):
            self.problems.append(spec)
        else:
            self.nodes.append(spec)

    def _widget_params(
        self,
        flat_id: str,
        node: Mapping[str, Any],
        signature: Signature | None,
        scope: _Scope,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        values = node.get("widgets_values")
        if values is None:
            return {}, {}
        if isinstance(values, Mapping):
            return dict(values), {}
        if signature is None:
            named = _widget_entries(node)
            controls = sum(1 for v in values if isinstance(v, str) and v in CONTROL_VALUES)
            if named and len(named) >= len(values) - controls:
                # a full save lists every widget; an export keeps only linked ones, and
                # then the names do not cover the values
                return name_values_by_entries(named, values)
            self.unsigned.add(node["type"])
            return {f"{POSITIONAL}{i}": v for i, v in enumerate(values)}, {}
        params, controls, position = name_widget_values(signature, values)
        if position < len(values):
            self.warnings.append(
                f"node {name_of(flat_id)} ({name_of(node['type'])}): "
                f"{len(values) - position} widget value(s) beyond the class's "
                f"{len(signature.widgets())} widget(s) were ignored: "
                f"{summarize_value(values[position:])}"
            )
        return params, controls

    # following links back to a real node

    def _origin(self, scope: _Scope, link: _Link, want_type: Any) -> _Resolved | None:
        """Where a link's value comes from, through reroutes, bypassed nodes and subgraph
        boundaries, hop by hop in a loop: a chain of any length costs no recursion."""
        seen: set[tuple[str, str]] = set()
        hop: _Resolved | tuple[_Scope, _Link] | None = (scope, link)
        while isinstance(hop, tuple):
            scope, link = hop
            marker = (scope.prefix, str(link.id))
            if marker in seen:
                self.problems.append(
                    f"link {name_of(link.id)}: reroutes or bypassed nodes form a loop"
                )
                return None
            seen.add(marker)
            hop = self._hop(scope, link, want_type)
        return hop

    def _hop(
        self, scope: _Scope, link: _Link, want_type: Any
    ) -> _Resolved | tuple[_Scope, _Link] | None:
        """The value or node at a link's origin, or the link to follow next."""
        if scope.chain and link.origin_id == SUBGRAPH_INPUT:
            return self._from_instance_input(scope, link.origin_slot)
        source = scope.nodes.get(str(link.origin_id))
        if source is None:
            return None  # reported by _check_link
        source_type = source["type"]
        mode = source.get("mode") or 0
        if mode == MUTED:
            return None
        if source_type == "PrimitiveNode":
            values = source.get("widgets_values") or []
            return _Resolved(value=values[0] if values else None, is_value=True)
        if source_type == "Reroute":
            return self._input_link(scope, source, 0)
        if mode == BYPASSED:
            slot = _bypass_slot(source, link.origin_slot, want_type)
            return None if slot is None else self._input_link(scope, source, slot)
        if source_type in self.definitions:
            inner = self._enter(scope, source)
            if inner is None:
                return None
            for inner_link in inner.links.values():
                if inner_link.target_id == SUBGRAPH_OUTPUT and (
                    inner_link.target_slot == link.origin_slot
                ):
                    return inner, inner_link
            return None
        return _Resolved(node=self._flat_source_id(scope, source), slot=link.origin_slot)

    def _flat_source_id(self, scope: _Scope, source: Mapping[str, Any]) -> str:
        properties = source.get("properties") or {}
        return str(properties.get(ORIGINAL_ID, scope.flat_id(source["id"])))

    def _input_link(
        self, scope: _Scope, node: Mapping[str, Any], slot: int
    ) -> tuple[_Scope, _Link] | None:
        inputs = node.get("inputs") or []
        link_id = inputs[slot].get("link") if slot < len(inputs) else None
        if link_id is None or str(link_id) not in scope.links:
            return None
        return scope, scope.links[str(link_id)]

    def _from_instance_input(
        self, scope: _Scope, slot: int
    ) -> _Resolved | tuple[_Scope, _Link] | None:
        assert scope.parent is not None and scope.instance is not None
        instance = scope.instance
        definition_inputs = (scope.definition or {}).get("inputs") or []
        name = definition_inputs[slot].get("name") if slot < len(definition_inputs) else None
        inputs = instance.get("inputs") or []
        index = next(
            (i for i, entry in enumerate(inputs) if name is not None and entry.get("name") == name),
            slot,
        )
        entry = inputs[index] if index < len(inputs) else {}
        if entry.get("link") is not None:
            return self._input_link(scope.parent, instance, index)
        widget = entry.get("widget")
        widget_name = widget.get("name", name) if isinstance(widget, Mapping) else name
        if widget_name in scope.input_values:
            return _Resolved(value=scope.input_values[widget_name], is_value=True)
        return None


def _xy(pos: Any) -> tuple[float, float]:
    if isinstance(pos, Mapping):
        pos = [pos.get("0", pos.get(0, 0)), pos.get("1", pos.get(1, 0))]
    if isinstance(pos, list | tuple) and len(pos) >= 2:
        try:
            x, y = float(pos[0]), float(pos[1])
        except (TypeError, ValueError, OverflowError):
            return 0.0, 0.0
        if math.isfinite(x) and math.isfinite(y):
            return x, y
    return 0.0, 0.0


def _instance_values(
    instance: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A subgraph instance's widget values: for its subgraph inputs (by name) and for
    promoted inner widgets (``properties.proxyWidgets``: ``[inner id, widget]`` pairs,
    ``-1`` naming a subgraph input)."""
    values = instance.get("widgets_values")
    proxies = (instance.get("properties") or {}).get("proxyWidgets") or []
    if isinstance(proxies, str):
        try:
            proxies = json.loads(proxies)
        except (ValueError, RecursionError):
            proxies = []
    if not isinstance(proxies, list):
        proxies = []
    proxies = [
        (str(p[0]), str(p[1])) for p in proxies if isinstance(p, list | tuple) and len(p) == 2
    ]
    widget_inputs = [
        str(e["widget"].get("name", e.get("name")))
        for e in instance.get("inputs") or []
        if isinstance(e, Mapping) and isinstance(e.get("widget"), Mapping)
    ]
    by_input: dict[str, Any] = {}
    promoted: dict[str, dict[str, Any]] = {}
    if isinstance(values, Mapping):
        by_input = {k: v for k, v in values.items() if k in widget_inputs}
        return by_input, promoted
    if not isinstance(values, list):
        return by_input, promoted
    if proxies and len(values) == len(proxies):
        pairs = list(zip(proxies, values, strict=True))
    else:
        pairs = [(("-1", name), v) for name, v in zip(widget_inputs, values, strict=False)]
        pairs += list(zip(proxies, values[len(widget_inputs) :], strict=False))
    for (inner_id, widget_name), value in pairs:
        if inner_id == "-1":
            by_input[widget_name] = value
        else:
            promoted.setdefault(inner_id, {})[widget_name] = value
    return by_input, promoted


def _parse_link(raw: Any) -> _Link:
    """A link whose shape ``shapes.link_problem`` has passed."""
    if isinstance(raw, list):
        link_type = raw[5] if len(raw) > 5 else "*"
        return _Link(raw[0], raw[1], int(raw[2]), raw[3], int(raw[4]), link_type)
    return _Link(
        raw["id"],
        raw["origin_id"],
        int(raw["origin_slot"]),
        raw["target_id"],
        int(raw["target_slot"]),
        raw.get("type", "*"),
    )


def _bypass_slot(node: Mapping[str, Any], origin_slot: int, want_type: Any) -> int | None:
    """The input a bypassed node passes through to an output (the frontend's rule):
    for a wildcard consumer the input at the output's index (else the first); otherwise
    the first input of exactly the consumer's type, the output's own index first."""
    count = len(node.get("inputs") or [])
    if count == 0:
        return None
    if want_type in ("*", "", None):
        return origin_slot if origin_slot < count else 0
    order = [origin_slot] if origin_slot < count else []
    for slot in order + [i for i in range(count) if i != origin_slot]:
        if node["inputs"][slot].get("type") == want_type:
            return slot
    return None


# -- writing --------------------------------------------------------------------------


class ComfyExportError(NodegraphError, ValueError):
    """A graph cannot be written as a ComfyUI workflow; the message names the node."""


def _incoming(graph: Graph, input_values: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per node: input name -> ``("edge", source, port)`` or ``("value", v)``."""
    found: dict[str, dict[str, Any]] = {}
    for edge in graph.edges:
        if edge.transform is not None:
            raise ComfyExportError(
                f"edge {edge.from_} -> {edge.to} has a transform, which ComfyUI cannot express"
            )
        if edge.from_graph_input:
            name = edge.source_port
            if input_values is not None and name in input_values:
                value = input_values[name]
            elif name in graph.inputs and not graph.inputs[name].required:
                value = graph.inputs[name].default
            else:
                raise ComfyExportError(
                    f"node {edge.target} input {edge.target_port!r} takes graph input "
                    f"{name!r}, which has no value; give it one"
                )
            found.setdefault(edge.target, {})[edge.target_port] = ("value", value)
        else:
            found.setdefault(edge.target, {})[edge.target_port] = ("edge", edge)
    return found


def _named_params(spec: NodeSpec, signature: Signature | None) -> dict[str, Any]:
    positional = {k: v for k, v in spec.params.items() if k.startswith(POSITIONAL)}
    if not positional:
        return dict(spec.params)
    if signature is None:
        raise ComfyExportError(
            f"node {spec.id} ({spec.type}) has widget values kept by position "
            f"({', '.join(positional)}); exporting to the API format needs its signature: "
            "load its pack, or pass a signature file from a ComfyUI /object_info"
        )
    named = {k: v for k, v in spec.params.items() if not k.startswith(POSITIONAL)}
    values = [positional[k] for k in sorted(positional, key=lambda k: int(k[1:]))]
    widget_params, _, _ = name_widget_values(signature, values)
    return {**widget_params, **named}


def name_widget_values(
    signature: Signature, values: list[Any]
) -> tuple[dict[str, Any], dict[str, list[Any]], int]:
    """Name ``widgets_values`` by the class's widget order.

    Returns the named values, the values of the frontend's extra control widgets (the
    ``control_after_generate`` mode after seeds and inputs that ask for it, and a combo's
    filter text), and how many values were used.
    """
    params: dict[str, Any] = {}
    controls: dict[str, list[Any]] = {}
    position = 0
    for spec in signature.live_widgets(params.get):
        if position >= len(values):
            break
        params[spec.name] = values[position]
        position += 1
        if (
            spec.has_control_widget
            and position < len(values)
            and isinstance(values[position], str)
            and values[position] in CONTROL_VALUES
        ):
            extra = [values[position]]
            position += 1
            if (
                spec.type == "COMBO"
                and position < len(values)
                and isinstance(values[position], str)
            ):
                extra.append(values[position])
                position += 1
            controls[spec.name] = extra
    return params, controls, position


def _widget_entries(node: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(widget name, type)`` of the inputs a node lists with ``widget: {name}``, in the
    order of its widgets: a DynamicCombo's members right after it (the frontend lists an
    option's inputs before their combo while a node is new)."""
    entries = []
    for entry in node.get("inputs") or []:
        widget = entry.get("widget") if isinstance(entry, Mapping) else None
        if isinstance(widget, Mapping) and isinstance(widget.get("name"), str):
            entries.append((widget["name"], entry.get("type")))
    ordered: list[tuple[str, Any]] = []
    placed: set[str] = set()

    def place(name: str, kind: Any) -> None:
        if name in placed:
            return
        placed.add(name)
        ordered.append((name, kind))
        for member, member_kind in entries:
            if member.rpartition(".")[0] == name:
                place(member, member_kind)

    for name, kind in entries:
        if "." not in name or name.rpartition(".")[0] not in {n for n, _ in entries}:
            place(name, kind)
    return ordered


def name_values_by_entries(
    entries: list[tuple[str, Any]], values: list[Any]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Name ``widgets_values`` by the widget names a newer UI file lists in a node's
    inputs, where no signature is known. A control mode after an INT (and a filter
    after a COMBO's mode) is told apart by there being more values than names left."""
    params: dict[str, Any] = {}
    controls: dict[str, list[Any]] = {}
    position = 0
    for index, (name, kind) in enumerate(entries):
        if position >= len(values):
            break
        params[name] = values[position]
        position += 1
        spare = len(values) - position - (len(entries) - index - 1)
        if (
            kind in ("INT", "COMBO")
            and spare > 0
            and isinstance(values[position], str)
            and values[position] in CONTROL_VALUES
        ):
            extra = [values[position]]
            position += 1
            if kind == "COMBO" and spare > 1 and isinstance(values[position], str):
                extra.append(values[position])
                position += 1
            controls[name] = extra
    return params, controls


def to_api(
    graph: Graph,
    signatures: Signatures | None = None,
    input_values: Mapping[str, Any] | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """The graph as an API prompt, which ComfyUI's ``POST /prompt`` runs.

    ``input_values`` fill graph inputs (their defaults otherwise); ``registry`` maps
    named output ports of nodegraph types to slots.
    """
    signatures = signatures or Signatures()
    kept = _kept_nodes(graph)
    incoming = _incoming(graph, input_values)
    types = {spec.id: spec.type for spec in graph.nodes}
    prompt: dict[str, Any] = {}
    for spec in graph.nodes:
        inputs = _named_params(spec, signatures.get(spec.type))
        for name, source in incoming.get(spec.id, {}).items():
            if source[0] == "value":
                inputs[name] = source[1]
            else:
                edge = source[1]
                edge_type = types[edge.source]
                inputs[name] = [edge.source, _slot_of(edge, edge_type, registry)]
        entry: dict[str, Any] = {"inputs": inputs, "class_type": spec.type}
        extra = kept.get(spec.id, {})
        meta = dict(extra.get("meta") or {})
        if spec.title is not None:
            meta["title"] = spec.title
        if meta:
            entry["_meta"] = meta
        entry.update(extra.get("extra") or {})
        prompt[spec.id] = entry
    return prompt


def _slot_of(edge: Edge, source_type: str, registry: Any) -> int:
    slot = output_slot(edge.source_port)
    if slot is not None:
        return slot
    node_type = registry.find(source_type) if registry is not None else None
    if node_type is not None and edge.source_port in node_type.outputs:
        return list(node_type.outputs).index(edge.source_port)
    raise ComfyExportError(
        f"edge {edge.from_} -> {edge.to}: output port {edge.source_port!r} of a "
        f"{source_type!r} node has no ComfyUI slot number; imported nodes use out0, out1, "
        "...; for nodegraph types, pass the registry that holds the type"
    )


def _kept_nodes(graph: Graph) -> dict[str, Any]:
    comfy = graph.metadata.get("comfy")
    return dict(comfy.get("nodes") or {}) if isinstance(comfy, Mapping) else {}


def to_ui(
    graph: Graph,
    signatures: Signatures | None = None,
    input_values: Mapping[str, Any] | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """The graph as a UI workflow (version 0.4), which the ComfyUI editor opens.

    Nodes keep the positions they were imported with; a graph without them is laid out
    left to right by topological level.
    """
    signatures = signatures or Signatures()
    kept = _kept_nodes(graph)
    incoming = _incoming(graph, input_values)
    types = {spec.id: spec.type for spec in graph.nodes}
    numeric = {spec.id: int(spec.id) for spec in graph.nodes if spec.id.isdigit()}
    next_id = max(numeric.values(), default=0)
    ui_ids: dict[str, int] = {}
    for spec in graph.nodes:
        if spec.id in numeric and numeric[spec.id] not in ui_ids.values():
            ui_ids[spec.id] = numeric[spec.id]
    for spec in graph.nodes:
        if spec.id not in ui_ids:
            next_id += 1
            ui_ids[spec.id] = next_id
    positions = _layout(graph, kept)
    order = {node_id: index for index, node_id in enumerate(_topological(graph))}

    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    ui_nodes = []
    for spec in graph.nodes:
        signature = signatures.get(spec.type)
        extra = kept.get(spec.id, {})
        known_types = dict(extra.get("inputs") or {})
        params = dict(spec.params)
        inputs_ui: list[dict[str, Any]] = []
        sources = incoming.get(spec.id, {})
        for name, source in sources.items():
            if source[0] == "value":
                params[name] = source[1]
        linked = {n: s[1] for n, s in sources.items() if s[0] == "edge"}
        widget_names = {w.name for w in signature.live_widgets(params.get)} if signature else set()
        for name in _input_order(signature, linked, known_types):
            edge = linked[name]
            slot = _slot_of(edge, types[edge.source], None if registry is None else registry)
            link_id = len(links) + 1
            input_type = _input_type(signature, name, known_types)
            links.append(
                [link_id, ui_ids[edge.source], slot, ui_ids[spec.id], len(inputs_ui), input_type]
            )
            out_links.setdefault((edge.source, slot), []).append(link_id)
            entry: dict[str, Any] = {"name": name, "type": input_type, "link": link_id}
            if "." in name:
                entry["label"] = name.rpartition(".")[2]  # the editor labels members so
            if name in widget_names or name in (extra.get("linked_widgets") or {}):
                entry["widget"] = {"name": name}
            inputs_ui.append(entry)
        widgets_values = _widgets_values(spec, signature, params, extra)
        node: dict[str, Any] = {
            "id": ui_ids[spec.id],
            "type": spec.type,
            "pos": positions[spec.id],
            "size": extra.get("size")
            or [DEFAULT_SIZE[0], 60 + 26 * (len(inputs_ui) + len(params))],
            "flags": extra.get("flags") or {},
            "order": order[spec.id],
            "mode": extra.get("mode", 0),
            "inputs": inputs_ui,
            "outputs": [],
            "properties": {"Node name for S&R": spec.type, **(extra.get("properties") or {})},
        }
        if spec.id != str(ui_ids[spec.id]):
            node["properties"][ORIGINAL_ID] = spec.id
        socket_values = _socket_values(signature, params, linked)
        if socket_values:
            node["properties"][SOCKET_VALUES] = socket_values
        if widgets_values is not None:
            node["widgets_values"] = widgets_values
        if spec.title is not None:
            node["title"] = spec.title
        for key in ("color", "bgcolor", "shape"):
            if key in extra:
                node[key] = extra[key]
        node.update(extra.get("ui_extra") or {})
        ui_nodes.append(node)
    used_slots: dict[str, list[int]] = {}
    for node_id, slot in out_links:
        used_slots.setdefault(node_id, []).append(slot)
    for spec, node in zip(graph.nodes, ui_nodes, strict=True):
        node["outputs"] = _outputs_ui(
            spec,
            signatures.get(spec.type),
            kept.get(spec.id, {}),
            out_links,
            used_slots.get(spec.id, []),
        )
    comfy = graph.metadata.get("comfy") if isinstance(graph.metadata.get("comfy"), Mapping) else {}
    workflow = dict(comfy.get("workflow") or {})
    document: dict[str, Any] = {
        "last_node_id": max(ui_ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": workflow.pop("groups", []),
        "config": workflow.pop("config", {}),
        "extra": workflow.pop("extra", {}),
    }
    document.update(workflow)
    document["version"] = 0.4
    return document


def _input_order(
    signature: Signature | None, linked: Mapping[str, Any], known_types: Mapping[str, Any]
) -> list[str]:
    ordered = [s.name for s in signature.visible_inputs()] if signature else list(known_types)
    ranked = [n for n in ordered if n in linked]
    return ranked + [n for n in linked if n not in ranked]


def _input_type(signature: Signature | None, name: str, known: Mapping[str, Any]) -> Any:
    if name in known:
        return known[name]
    spec = signature.input(name) if signature else None
    return spec.type if spec else "*"


def _widgets_values(
    spec: NodeSpec, signature: Signature | None, params: Mapping[str, Any], extra: Mapping[str, Any]
) -> Any:
    linked_values = extra.get("linked_widgets") or {}
    if signature is None:
        if not params:
            return None
        if all(k.startswith(POSITIONAL) for k in params):
            return [params[k] for k in sorted(params, key=lambda k: int(k[1:]))]
        return dict(params)  # names without an order: the frontend reads objects too
    controls = extra.get("controls") or {}
    values: list[Any] = []
    written: dict[str, Any] = {}
    for widget in signature.live_widgets(written.get):
        if widget.name in params:
            value = params[widget.name]
        elif widget.name in linked_values:
            value = linked_values[widget.name]
        else:
            value = widget.default
        written[widget.name] = value
        values.append(value)
        if widget.has_control_widget:
            values.extend(controls.get(widget.name) or ["fixed"])
    return values


def _socket_values(
    signature: Signature | None, params: Mapping[str, Any], linked: Mapping[str, Any]
) -> dict[str, Any]:
    """Literal values of inputs that the editor has no widget for (see SOCKET_VALUES)."""
    if signature is None or not signature.has_dynamic_inputs:
        return {}
    widgets = {w.name for w in signature.live_widgets(params.get)}
    return {k: v for k, v in params.items() if k not in widgets and k not in linked}


def _outputs_ui(
    spec: NodeSpec,
    signature: Signature | None,
    extra: Mapping[str, Any],
    out_links: Mapping[tuple[str, int], list[int]],
    used: list[int],
) -> list[dict[str, Any]]:
    known = list(extra.get("outputs") or [])
    if signature is not None:
        described = [
            {"name": name, "type": kind}
            for name, kind in zip(signature.return_names, signature.return_types, strict=False)
        ]
    else:
        described = known
    while len(described) <= max(used, default=-1):
        described.append({"name": f"out{len(described)}", "type": "*"})
    return [
        {**entry, "links": out_links.get((spec.id, slot), []), "slot_index": slot}
        for slot, entry in enumerate(described)
    ]


def _topological(graph: Graph) -> list[str]:
    return [node_id for level in _levels(graph) for node_id in level]


def _levels(graph: Graph) -> list[list[str]]:
    predecessors: dict[str, list[str]] = {spec.id: [] for spec in graph.nodes}
    for edge in graph.edges:
        if not edge.from_graph_input and edge.target in predecessors:
            predecessors[edge.target].append(edge.source)
    return levels(predecessors, topological_order(predecessors))


def _layout(graph: Graph, kept: Mapping[str, Any]) -> dict[str, Any]:
    """Stored positions where nodes have them; the others left to right by level, below
    the stored ones."""
    positions: dict[str, Any] = {}
    for spec in graph.nodes:
        stored = kept.get(spec.id, {}).get("pos")
        if stored is not None:
            positions[spec.id] = stored
    top = max((_xy(p)[1] for p in positions.values()), default=-220.0) + 220 if positions else 0
    for column, level in enumerate(_levels(graph)):
        row = 0
        for node_id in level:
            if node_id not in positions:
                positions[node_id] = [100 + 380 * column, 100 + top + 220 * row]
                row += 1
    return positions
