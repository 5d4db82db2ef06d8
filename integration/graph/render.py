"""Draw a bound graph as a mermaid flowchart, its nodes coloured by state.

    >>> from integration.graph import NodeRegistry, bind, load_graph
    >>> from integration.graph.render import to_mermaid
    >>> bound = bind(load_graph("flows/examples/hello.yaml"), NodeRegistry.default())
    >>> text = to_mermaid(bound, {"greeting": "completed", "shout": "failed"})
    >>> text.splitlines()[0], "classDef failed" in text
    ('flowchart LR', True)

Mermaid ids are generated (``n0``, ``i0``, ``o0``): node ids may contain ``-`` and
``:``, which mermaid reads as edge syntax. Labels carry the node id, its type and, when
known, its state in words, so the diagram does not depend on colour alone. Nodes
without a state (outside the plan of a lazy run) get the ``not_run`` class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from integration.graph.validate import BoundGraph

STATE_STYLES: dict[str, str] = {
    "completed": "fill:#d1fae5,stroke:#059669,color:#064e3b",
    "cached": "fill:#dbeafe,stroke:#2563eb,color:#1e3a8a",
    "fallback": "fill:#fef3c7,stroke:#d97706,color:#78350f",
    "failed": "fill:#fee2e2,stroke:#dc2626,color:#7f1d1d,stroke-width:2px",
    "upstream_failed": "fill:#fff1f2,stroke:#f87171,color:#7f1d1d,stroke-dasharray:4 3",
    "skipped": "fill:#f3f4f6,stroke:#9ca3af,color:#374151,stroke-dasharray:4 3",
    "pending": "fill:#ffffff,stroke:#9ca3af,color:#6b7280,stroke-dasharray:2 2",
    "running": "fill:#ede9fe,stroke:#7c3aed,color:#4c1d95",
    "not_run": "fill:#fafafa,stroke:#d1d5db,color:#9ca3af",
    "graph_io": "fill:#f9fafb,stroke:#6b7280,color:#111827",
}
"""Mermaid ``classDef`` styles by node state (the values of ``NodeState``)."""

_DEFAULT_STYLE = "fill:#ffffff,stroke:#6b7280,color:#111827"
_LABEL_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;", "|": "#124;"}


def to_mermaid(
    bound: BoundGraph,
    states: Mapping[str, str] | None = None,
    *,
    direction: str = "LR",
) -> str:
    """The mermaid ``flowchart`` source of ``bound`` (without a markdown fence).

    ``states`` maps node ids to state names; each named state becomes a ``classDef``
    (``STATE_STYLES``, or a neutral style for a state it does not know). Graph inputs
    and outputs are drawn as rounded nodes. With ``states=None`` nothing is coloured.
    """
    if direction not in ("LR", "RL", "TB", "TD", "BT"):
        raise ValueError(f"direction must be one of LR, RL, TB, TD, BT, got {direction!r}")
    lines = [f"flowchart {direction}"]
    ids = {node_id: f"n{i}" for i, node_id in enumerate(bound.order)}
    inputs = {name: f"i{i}" for i, name in enumerate(bound.inputs)}
    outputs = bound.graph.outputs
    for name, mermaid_id in inputs.items():
        lines.append(f'    {mermaid_id}(["{_label(f"input {name}")}"])')
    for node_id in bound.order:
        node = bound.nodes[node_id]
        parts = [node_id, node.type.qualified_name]
        if states is not None:
            parts.append(str(states.get(node_id, "not run")).replace("_", " "))
        label = "<br/>".join(_label(part) for part in parts)
        lines.append(f'    {ids[node_id]}["{label}"]')
    for i, name in enumerate(outputs):
        lines.append(f'    o{i}(["{_label(f"output {name}")}"])')
    for node_id in bound.order:
        for port, binding in bound.nodes[node_id].bindings.items():
            if binding.kind == "edge" and binding.source in ids:
                source = ids[binding.source]
                text = f"{binding.source_port} → {port}"
            elif binding.kind == "input" and binding.source_port in inputs:
                source = inputs[binding.source_port]
                text = port
            else:
                continue
            lines.append(f'    {source} -->|"{_label(text)}"| {ids[node_id]}')
    for i, output in enumerate(outputs.values()):
        if output.node in ids:
            lines.append(f'    {ids[output.node]} -->|"{_label(output.port)}"| o{i}')
    if inputs or outputs:
        lines.append(f"    classDef graph_io {STATE_STYLES['graph_io']}")
        members = [*inputs.values(), *(f"o{i}" for i in range(len(outputs)))]
        lines.append(f"    class {','.join(members)} graph_io")
    if states is not None:
        by_class: dict[str, list[str]] = {}
        for node_id in bound.order:
            name = _class_name(str(states.get(node_id, "not_run")))
            by_class.setdefault(name, []).append(ids[node_id])
        for name, members in by_class.items():
            lines.append(f"    classDef {name} {STATE_STYLES.get(name, _DEFAULT_STYLE)}")
            lines.append(f"    class {','.join(members)} {name}")
    return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    # Mermaid's entity codes, because a raw quote ends the label and <, > read as HTML.
    return "".join(_LABEL_ESCAPES.get(char, char) for char in text)


def _class_name(state: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", state.lower())
    return name if name and not name[0].isdigit() else f"s_{name}"
