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
from html import escape

from integration.graph.order import levels
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


def _style(state: str | None) -> dict[str, str]:
    """A state's mermaid style as SVG attributes (fill, stroke, text colour)."""
    raw = STATE_STYLES.get(_class_name(state), _DEFAULT_STYLE) if state else _DEFAULT_STYLE
    parts = dict(item.split(":", 1) for item in raw.split(","))
    return {
        "fill": parts.get("fill", "#ffffff"),
        "stroke": parts.get("stroke", "#6b7280"),
        "color": parts.get("color", "#111827"),
        "dash": parts.get("stroke-dasharray", "").replace(" ", ","),
    }


def to_dot(
    bound: BoundGraph,
    states: Mapping[str, str] | None = None,
    timings: Mapping[str, float] | None = None,
) -> str:
    """The Graphviz DOT source of ``bound``, coloured like ``to_mermaid`` when
    ``states`` are given; ``timings`` (seconds) join the labels."""
    lines = [
        f"digraph {_dot_id(bound.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="#ffffff"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for name in bound.inputs:
        lines.append(
            f"  {_dot_id('input:' + name)} [label={_dot_id('input ' + name)}, shape=oval];"
        )
    for node_id in bound.order:
        node = bound.nodes[node_id]
        label = [node_id, node.type.qualified_name]
        attributes = ""
        if states is not None:
            state = str(states.get(node_id, "not_run"))
            label.append(state.replace("_", " "))
            style = _style(state)
            attributes = (
                f', fillcolor="{style["fill"]}", color="{style["stroke"]}", '
                f'fontcolor="{style["color"]}"'
            )
        if timings and node_id in timings:
            label.append(f"{timings[node_id] * 1000:.1f} ms")
        lines.append(f"  {_dot_id(node_id)} [label={_dot_id(chr(10).join(label))}{attributes}];")
    for name, output in bound.graph.outputs.items():
        lines.append(
            f"  {_dot_id('output:' + name)} [label={_dot_id('output ' + name)}, shape=oval];"
        )
        if output.node in bound.nodes:
            lines.append(
                f"  {_dot_id(output.node)} -> {_dot_id('output:' + name)} "
                f"[label={_dot_id(output.port)}];"
            )
    for node_id in bound.order:
        for port, binding in bound.nodes[node_id].bindings.items():
            if binding.kind == "edge":
                source, text = binding.source, f"{binding.source_port} → {port}"
            elif binding.kind == "input":
                source, text = "input:" + binding.source_port, port
            else:
                continue
            lines.append(f"  {_dot_id(source)} -> {_dot_id(node_id)} [label={_dot_id(text)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


NODE_WIDTH, NODE_HEIGHT, COLUMN_GAP, ROW_GAP, MARGIN = 230, 66, 90, 26, 30


def to_html(
    bound: BoundGraph,
    states: Mapping[str, str] | None = None,
    timings: Mapping[str, float] | None = None,
    title: str | None = None,
) -> str:
    """A self-contained HTML page that draws the graph as SVG: no script or style is
    fetched from anywhere. Nodes are placed in columns by dependency level. With
    ``states`` (after a run) they are coloured by state; hovering a node shows its
    type, state and time (``timings``, seconds)."""
    columns = _columns(bound)
    position: dict[str, tuple[float, float]] = {}
    for column, group in enumerate(columns):
        for row, node_id in enumerate(group):
            position[node_id] = (
                MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
                MARGIN + row * (NODE_HEIGHT + ROW_GAP),
            )
    width, height = _svg_size(columns)
    edges = []
    for node_id in bound.order:
        for port, binding in bound.nodes[node_id].bindings.items():
            if binding.kind != "edge" or binding.source not in position:
                continue
            x1, y1 = position[binding.source]
            x2, y2 = position[node_id]
            x1, y1, y2 = x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, y2 + NODE_HEIGHT / 2
            bend = (x2 - x1) / 2
            edges.append(
                f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} '
                f'{x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" marker-end="url(#arrow)">'
                f"<title>{escape(f'{binding.source}.{binding.source_port} → {node_id}.{port}')}"
                "</title></path>"
            )
    nodes = []
    for node_id in bound.order:
        x, y = position[node_id]
        node_type = bound.nodes[node_id].type.qualified_name
        state = str(states.get(node_id, "not_run")) if states is not None else None
        style = _style(state)
        seconds = timings.get(node_id) if timings else None
        details = [f"{node_id} ({node_type})"]
        if state is not None:
            details.append(f"state: {state.replace('_', ' ')}")
        if seconds is not None:
            details.append(f"time: {seconds * 1000:.1f} ms")
        tooltip = escape("\n".join(details))
        second_line = node_type if state is None else f"{node_type} · {state.replace('_', ' ')}"
        dash = f' stroke-dasharray="{style["dash"]}"' if style["dash"] else ""
        nodes.append(
            f'<g class="node" data-node="{escape(node_id)}" data-state="{escape(state or "")}"'
            f' data-seconds="{"" if seconds is None else f"{seconds:.6f}"}"'
            f' transform="translate({x:.0f},{y:.0f})"><title>{tooltip}</title>'
            f'<rect width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8" fill="{style["fill"]}"'
            f' stroke="{style["stroke"]}" stroke-width="1.5"{dash}/>'
            f'<text x="12" y="26" fill="{style["color"]}" class="id">'
            f"{escape(_clip(node_id))}</text>"
            f'<text x="12" y="47" fill="{style["color"]}" class="type">'
            f"{escape(_clip(second_line, 34))}</text></g>"
        )
    heading = escape(title or f"graph {bound.name}")
    legend = ""
    if states is not None:
        counts: dict[str, int] = {}
        for node_id in bound.order:
            name = str(states.get(node_id, "not_run"))
            counts[name] = counts.get(name, 0) + 1
        legend = " · ".join(
            f"{escape(k.replace('_', ' '))}: {v}" for k, v in sorted(counts.items())
        )
    return _HTML.format(
        title=heading,
        legend=legend,
        width=width,
        height=height,
        edges="\n".join(edges),
        nodes="\n".join(nodes),
        count=len(bound.order),
    )


def _columns(bound: BoundGraph) -> list[list[str]]:
    return levels(bound.predecessors(), bound.order)


def _svg_size(columns: list[list[str]]) -> tuple[int, int]:
    width = MARGIN * 2 + max(len(columns), 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = MARGIN * 2 + max((len(g) for g in columns), default=1) * (NODE_HEIGHT + ROW_GAP)
    return width, height


def html_page_size(bound: BoundGraph) -> tuple[int, int]:
    """The browser window (width, height) that shows ``to_html``'s page whole: the
    drawing plus the page's margin and heading."""
    width, height = _svg_size(_columns(bound))
    return width + 40, height + 140


def _clip(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ font-family: Helvetica, Arial, sans-serif; margin: 16px; color: #111827; }}
  h1 {{ font-size: 18px; margin: 0 0 4px; }}
  #legend, #info {{ font-size: 13px; color: #4b5563; min-height: 18px; }}
  svg text.id {{ font-size: 14px; font-weight: bold; }}
  svg text.type {{ font-size: 12px; }}
  svg .edge {{ fill: none; stroke: #9ca3af; stroke-width: 1.5; }}
  svg .node {{ cursor: default; }}
  svg .node:hover rect {{ stroke-width: 3; }}
</style>
</head>
<body>
<h1>{title}</h1>
<div id="legend">{legend}</div>
<div id="info">Hover over a node for its details.</div>
<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"
     viewBox="0 0 {width} {height}" data-expected-nodes="{count}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
  markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#9ca3af"/>
</marker></defs>
{edges}
{nodes}
</svg>
<script>
(function () {{
  var info = document.getElementById("info");
  var nodes = document.querySelectorAll("#graph .node");
  nodes.forEach(function (node) {{
    node.addEventListener("mouseenter", function () {{
      info.textContent = node.querySelector("title").textContent.replace(/\\n/g, " · ");
    }});
  }});
  document.body.setAttribute("data-rendered-nodes", String(nodes.length));
}})();
</script>
</body>
</html>
"""
