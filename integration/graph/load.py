"""Read graph documents from files, text or data, with errors that say where.

    >>> from integration.graph.load import load_graph
    >>> load_graph({"name": "empty"}).name
    'empty'

Every failure is a ``GraphLoadError`` naming the source, the path inside the document
(``nodes[2].type``) and, for files, the line and column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from integration.errors import GraphLoadError
from integration.graph.gcpause import gc_paused
from integration.graph.model import (
    GRAPH_NAME_PATTERN,
    NODE_ID_PATTERN,
    PORT_REF_PATTERN,
    Graph,
)

GraphSource = Graph | Mapping[str, Any] | str | Path


def load_graph(source: GraphSource, signatures: Any = None) -> Graph:
    """Load a graph from a ``Graph``, a mapping, a file path, or JSON/YAML text.

    A ComfyUI workflow (UI or API format, told apart by its shape) is imported; its
    widget values are named with ``signatures`` (``integration.comfy.Signatures``).
    """
    if isinstance(source, Graph):
        return source
    if isinstance(source, Mapping):
        return _comfy_or_graph(dict(source), "<data>", None, signatures)
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GraphLoadError(str(path), [(str(path), "no such file")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GraphLoadError(str(path), [(str(path), f"cannot read: {exc}")]) from None
        return parse_graph_text(text, str(path), signatures)
    return parse_graph_text(source, "<text>", signatures)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith(("{", "[")):
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def parse_graph_text(text: str, source: str, signatures: Any = None) -> Graph:
    """Parse JSON or YAML text. ``source`` names it in errors."""
    try:
        if source.endswith(".json"):
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise GraphLoadError(source, [(f"{source}:{exc.lineno}:{exc.colno}", exc.msg)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise GraphLoadError(source, [(where, f"invalid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise GraphLoadError(
            source, [(source, f"a graph document is a mapping, not {type(data).__name__}")]
        )
    return _comfy_or_graph(data, source, text, signatures)


def _comfy_or_graph(data: dict[str, Any], source: str, text: str | None, signatures: Any) -> Graph:
    from integration.comfy.workflow import graph_name_for, import_workflow, workflow_format

    if "schema" not in data and workflow_format(data) is not None:
        name = graph_name_for(source) if not source.startswith("<") else None
        return import_workflow(data, signatures, name=name).graph
    return parse_graph(data, source, text)


def parse_graph(data: dict[str, Any], source: str, text: str | None = None) -> Graph:
    """Validate parsed data as a ``Graph``; ``text`` (if given) locates errors by line."""
    try:
        with gc_paused():
            return Graph.model_validate(data)
    except ValidationError as exc:
        marks = _marks(text) if text is not None else None
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            where = source
            position = _position(marks, loc) if marks is not None else None
            if position is not None:
                where = f"{source}:{position[0]}:{position[1]}"
            problems.append((f"{where} {format_loc(loc)}".strip(), _message(error)))
        raise GraphLoadError(source, problems) from None


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('nodes', 2, 'type')`` -> ``nodes[2].type``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(error: Any) -> str:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return "unknown field (not part of the nodegraph/v1 schema)"
    if error["type"] == "literal_error" and error["loc"] == ("schema",):
        return f"unsupported schema {error['input']!r}; this nodegraph reads 'nodegraph/v1'"
    if error["type"] == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        expected = _PATTERN_MEANINGS.get(pattern, f"text matching {pattern}")
        return f"expected {expected}, got {error['input']!r}"
    return message


_PATTERN_MEANINGS = {
    PORT_REF_PATTERN: "a port reference 'node_id.port'",
    NODE_ID_PATTERN: "a node id of letters, digits, '_', '-' and ':'",
    GRAPH_NAME_PATTERN: "a name of letters, digits, spaces, '_', '-' and '.'",
}


def _marks(text: str) -> Any:
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


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
