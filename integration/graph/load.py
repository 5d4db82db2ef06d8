"""Read graph documents from files, text or data, with errors that say where.

    >>> from integration.graph.load import load_graph
    >>> load_graph({"name": "empty"}).name
    'empty'

Every failure is a ``GraphLoadError`` naming the source, the path inside the document
(``nodes[2].type``) and, for files, the line and column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from integration.errors import GraphLoadError, bounded_repr
from integration.graph.gcpause import gc_paused
from integration.graph.limits import (
    MAX_DOCUMENT_CHARS,
    compose_yaml,
    document_problem,
    format_loc,
    parse_json,
    parse_yaml,
)
from integration.graph.loaders import document_loaders
from integration.graph.model import (
    GRAPH_NAME_PATTERN,
    NODE_ID_PATTERN,
    PORT_REF_PATTERN,
    Graph,
)

_NOT_JSON: Any = object()

GraphSource = Graph | Mapping[str, Any] | str | Path


def load_graph(source: GraphSource, signatures: Any = None) -> Graph:
    """Load a graph from a ``Graph``, a mapping, a file path, or JSON/YAML text.

    A document of another format is read by the document loader that knows it
    (``integration.graph.loaders``): a ComfyUI workflow (UI or API format, told apart
    by its shape) is imported, its widget values named with ``signatures``
    (``integration.comfy.Signatures``).
    """
    if isinstance(source, Graph):
        return source
    if isinstance(source, Mapping):
        return _foreign_or_graph(dict(source), "<data>", None, signatures)
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_DOCUMENT_CHARS * 4:  # UTF-8 takes at most 4 bytes a character
                raise GraphLoadError(
                    str(path),
                    [
                        (
                            str(path),
                            f"{size:,} bytes, over the max document size "
                            f"({MAX_DOCUMENT_CHARS:,} characters)",
                        )
                    ],
                )
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GraphLoadError(str(path), [(str(path), "no such file")]) from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise GraphLoadError(str(path), [(str(path), f"cannot read: {exc}")]) from None
        return parse_graph_text(text, str(path), signatures)
    return parse_graph_text(source, "<text>", signatures)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith(("{", "[")):
        return False
    if text.endswith((".yaml", ".yml", ".json")):
        return True
    if len(text) > 4096 or "\0" in text or ":" in text.partition("/")[0]:
        return False  # YAML text (a one-line mapping has ': '), never a file name
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the file system
        return False


def parse_graph_text(text: str, source: str, signatures: Any = None) -> Graph:
    """Parse JSON or YAML text. ``source`` names it in errors.

    Text in ``.json`` files, and text that starts like JSON and is JSON, is read by the
    JSON parser; the rest by a safe YAML loader. Both apply the limits of
    ``integration.graph.limits``.
    """
    marks = None
    data = _NOT_JSON
    if source.endswith(".json"):
        data = parse_json(text, source)
    elif text.lstrip().startswith(("{", "[")):
        # YAML flow mappings such as "{name: g}" start with a brace too; they are YAML.
        with contextlib.suppress(GraphLoadError):
            data = parse_json(text, source)
    if data is _NOT_JSON:
        data, marks = parse_yaml(text, source)
    if not isinstance(data, dict):
        if isinstance(data, str) and source == "<text>" and "\n" not in text.strip():
            message = (
                f"{bounded_repr(text.strip(), 120)} is no file, and read as YAML it is "
                "text, not a graph document"
            )
        else:
            message = f"a graph document is a mapping, not {type(data).__name__}"
        raise GraphLoadError(source, [(source, message)])
    return _foreign_or_graph(data, source, text, signatures, marks)


def _foreign_or_graph(
    data: dict[str, Any], source: str, text: str | None, signatures: Any, marks: Any = None
) -> Graph:
    if "schema" not in data:  # a nodegraph document says its schema; others may not
        for loader in document_loaders():
            graph = loader.load(data, source, signatures)
            if graph is not None:
                return graph
    return parse_graph(data, source, text, marks)


def parse_graph(
    data: dict[str, Any], source: str, text: str | None = None, marks: Any = None
) -> Graph:
    """Validate parsed data as a ``Graph``; ``text`` (or its YAML node tree ``marks``),
    if given, locates errors by line."""
    found = document_problem(data)
    if found is not None:
        # No YAML composition of JSON text here: PyYAML scans deep flow nesting in
        # quadratic time, and the path says where.
        loc, why = found
        raise GraphLoadError(source, [(_where(source, marks, loc), _what(loc, why, data))])
    try:
        with gc_paused():
            return Graph.model_validate(data)
    except ValidationError as exc:
        if marks is None and text is not None:
            marks = compose_yaml(text)
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = _message(error)
            node_id = _node_id(data, loc) if len(loc) >= 4 else None
            # nodes[2].on_error.timeout_seconds: the id says which node more plainly
            problems.append(
                (_where(source, marks, loc), f"{message} (node {node_id})" if node_id else message)
            )
        raise GraphLoadError(source, problems) from None


def _where(source: str, marks: Any, loc: tuple[Any, ...]) -> str:
    """``file:line:col nodes[2].params.x``, as far as it is known."""
    where = source
    position = _position(marks, loc) if marks is not None else None
    if position is not None:
        where = f"{source}:{position[0]}:{position[1]}"
    return f"{where} {format_loc(loc)}".strip()


def _node_id(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) < 3 or loc[0] != "nodes" or not isinstance(loc[1], int):
        return None
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list) or not 0 <= loc[1] < len(nodes):
        return None
    spec = nodes[loc[1]]
    node_id = spec.get("id") if isinstance(spec, dict) else None
    return bounded_repr(node_id, 80) if isinstance(node_id, str) else None


def _what(loc: tuple[Any, ...], why: str, data: Any) -> str:
    node_id = _node_id(data, loc)
    if node_id and len(loc) >= 4 and loc[2] == "params":
        return f"node {node_id} param {bounded_repr(loc[3], 80)} {why}"
    if node_id:
        return f"node {node_id}: the value {why}"
    return f"the value {why}" if loc else f"the document {why}"


def _message(error: Any) -> str:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return "unknown field (not part of the nodegraph/v1 schema)"
    if error["type"] == "literal_error" and error["loc"] == ("schema",):
        shown = bounded_repr(error["input"])
        return f"unsupported schema {shown}; this nodegraph reads 'nodegraph/v1'"
    if error["type"] == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        expected = _PATTERN_MEANINGS.get(pattern, f"text matching {pattern}")
        return f"expected {expected}, got {bounded_repr(error['input'])}"
    return bounded_repr(message, 300) if len(message) > 300 else message


_PATTERN_MEANINGS = {
    PORT_REF_PATTERN: "a port reference 'node_id.port'",
    NODE_ID_PATTERN: "a node id of letters, digits, '_', '-' and ':'",
    GRAPH_NAME_PATTERN: "a name of letters, digits, spaces, '_', '-' and '.'",
}


def _position(root: Any, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """Line and column of the YAML node at ``loc``, or of its nearest existing parent."""
    current = root
    best = None
    for part in loc:
        if current is None:
            break
        best = (current.start_mark.line + 1, current.start_mark.column + 1)
        if isinstance(current, yaml.MappingNode):
            current = next(
                (value for key, value in current.value if getattr(key, "value", None) == part),
                None,
            )
            if current is None:
                break
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            current = current.value[part] if part < len(current.value) else None
        else:
            break
    if current is not None:
        best = (current.start_mark.line + 1, current.start_mark.column + 1)
    return best
