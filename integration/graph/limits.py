"""Bounds on graph documents: text size, nesting depth, values after YAML aliases, and
values that are not JSON-like. Everything here is iterative and bounded.

    >>> from integration.graph.limits import parse_json, parse_yaml, value_problem
    >>> parse_json('{"name": "g"}', "<text>")
    {'name': 'g'}
    >>> data, _ = parse_yaml("when: 2024-01-01", "<text>")
    >>> value_problem(data)[0]
    ('when',)

Parsers raise ``GraphLoadError`` naming the limit and, for YAML, the line and column.
The ComfyUI importer and the graph loader share them.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from integration.errors import GraphLoadError, bounded_repr

MAX_DEPTH = 100
"""The max nesting depth of lists and mappings in a document."""
MAX_DOCUMENT_CHARS = 32 * 2**20
"""The max document size, in characters."""
MAX_VALUES = 2_000_000
"""The max number of values (scalars, lists, mappings) in a document, YAML aliases
and merge keys expanded: a "billion laughs" alias bomb stops here."""
MAX_KEY_CHARS = 256
"""The longest mapping key (param, input and output names are keys): names are
repeated in error messages, which stay short."""
MAX_INT_BITS = 13_000
"""Ints past about 4,000 digits cannot be written as JSON (Python refuses to convert
them to text), so a run record could not hold them."""


def check_size(text: str, source: str) -> None:
    """Refuse text over ``MAX_DOCUMENT_CHARS``."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise GraphLoadError(
            source,
            [
                (
                    source,
                    f"the document has {len(text):,} characters, over the max document "
                    f"size of {MAX_DOCUMENT_CHARS:,}",
                )
            ],
        )


def parse_json(text: str, source: str) -> Any:
    """JSON text as data, with the size and depth limits (the depth of what it holds is
    checked by ``value_problem``)."""
    check_size(text, source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphLoadError(source, [(f"{source}:{exc.lineno}:{exc.colno}", exc.msg)]) from None
    except RecursionError:
        # The C decoder guards its own recursion; deeper than that is far past MAX_DEPTH.
        raise GraphLoadError(source, [(source, _too_deep())]) from None
    except ValueError as exc:  # an int literal of more than 4300 digits
        raise GraphLoadError(source, [(source, f"invalid JSON: {exc}")]) from None


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """YAML text as data (safe loader, limits checked before anything is built), and
    its node tree, which locates later problems by line and column."""
    check_size(text, source)
    loader = None
    try:
        loader = GraphYamlLoader(text)  # its reader refuses NUL and other control bytes
        root = loader.get_single_node()
        if root is None:
            return None, None
        if loader.aliased:  # without aliases, the tree is as large as the text
            _check_nodes(root)
        return loader.construct_document(root), root
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        if not isinstance(exc, _LimitError):
            problem = f"invalid YAML: {problem}"
        raise GraphLoadError(source, [(where, problem)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def compose_yaml(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` under the depth limit, or ``None`` if it has none."""
    loader = None
    try:
        loader = GraphYamlLoader(text)
        return loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        return None
    finally:
        if loader is not None:
            loader.dispose()


class _LimitError(ComposerError):
    """Valid YAML that is past one of the limits."""


class GraphYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting past ``MAX_DEPTH`` while composing (its
    composer recurses) and turns every constructor failure (``!!bool maybe`` is a
    ``KeyError`` inside PyYAML) into a ``ConstructorError`` with the node's position."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.aliased = False
        """Whether the document uses an alias (merge keys use them too)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliased = True
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _LimitError(None, None, _too_deep(), mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            raise ConstructorError(
                None,
                None,
                f"cannot read {bounded_repr(node.value, 40)} as {node.tag} "
                f"({type(exc).__name__}: {bounded_repr(str(exc), 80)})",
                node.start_mark,
            ) from None


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels (the max nesting depth)"


def _check_nodes(root: yaml.Node) -> None:
    """Refuse a node tree that aliases make recursive, deeper than ``MAX_DEPTH`` or
    larger than ``MAX_VALUES``, before a single value is built.

    Sizes and depths are memoized per node, so a tree that aliases expand to 10**9
    values costs as much as it has distinct nodes.
    """
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            active.discard(key)
            size = 1 + sum(sizes[id(child)][0] for child in children)
            depth = 1 + max((sizes[id(child)][1] for child in children), default=0)
            sizes[key] = (size, depth)
            if depth > MAX_DEPTH:
                raise _LimitError(None, None, _too_deep() + ", aliases expanded", node.start_mark)
            if size > MAX_VALUES:
                raise _LimitError(
                    None,
                    None,
                    f"aliases expand this to more than {MAX_VALUES:,} values (the max "
                    "expanded YAML size)",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise _LimitError(
                None, None, "a recursive alias (a value that contains itself)", node.start_mark
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def document_problem(data: Any) -> tuple[tuple[Any, ...], str] | None:
    """``value_problem`` for the free-form parts of a graph document (params, metadata,
    input defaults and choices, fallbacks, transform arguments), as ``(path, why)``.

    The rest of a document has a fixed shape that the schema checks, so it is not
    walked: a 50,000-node graph costs one look at each param.
    """
    if not isinstance(data, dict):
        return None
    places: list[tuple[tuple[Any, ...], Any]] = [(("metadata",), data.get("metadata"))]
    for section in ("inputs", "outputs"):
        named = data.get(section)
        if isinstance(named, dict):
            for name in named:
                if isinstance(name, str) and len(name) > MAX_KEY_CHARS:
                    return (section,), _key_problem(name)
    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        for name, spec in inputs.items():
            if isinstance(spec, dict):
                places += [
                    ((("inputs", name, part)), spec.get(part)) for part in ("default", "choices")
                ]
    nodes = data.get("nodes")
    for index, spec in enumerate(nodes if isinstance(nodes, list) else ()):
        if not isinstance(spec, dict):
            continue
        params = spec.get("params")
        if isinstance(params, dict):
            for name, value in params.items():
                if isinstance(name, str) and len(name) > MAX_KEY_CHARS:
                    return ("nodes", index, "params"), _key_problem(name)
                if type(value) not in _PLAIN:
                    places.append((("nodes", index, "params", name), value))
        policy = spec.get("on_error")
        fallback = policy.get("fallback") if isinstance(policy, dict) else None
        if isinstance(fallback, dict):
            base = ("nodes", index, "on_error", "fallback")
            places += [((*base, part), fallback.get(part)) for part in ("params", "outputs")]
    edges = data.get("edges")
    for index, edge in enumerate(edges if isinstance(edges, list) else ()):
        if isinstance(edge, dict) and isinstance(edge.get("transform"), dict):
            places.append((("edges", index, "transform"), edge["transform"]))
    for where, value in places:
        found = value_problem(value)
        if found is not None:
            return (*where, *found[0]), found[1]
    return None


def value_problem(value: Any) -> tuple[tuple[Any, ...], str] | None:
    """The first part of ``value`` that a document cannot hold, as ``(path, why)``, or
    ``None``: dates and times, sets, mapping keys that are not text, a value that
    contains itself, nesting past ``MAX_DEPTH``, more than ``MAX_VALUES`` values (shared
    parts counted each time), keys over ``MAX_KEY_CHARS``, ints too large for JSON.

    Other objects (numpy arrays given from Python) pass: they are not read from text.
    Each distinct list or mapping is walked once, so shared parts cost nothing extra.
    """
    checked: dict[int, tuple[int, int]] = {}  # id -> (values, height) of a good container
    active: set[int] = set()
    # Enter: (False, value, parent link, key, depth). Exit: (True, container, parent
    # link, key, its scalar count, its container children).
    stack: list[tuple[Any, ...]] = [(False, value, None, None, 0)]
    while stack:
        entry = stack.pop()
        if entry[0]:
            _, item, parent, key, scalars, children = entry
            active.discard(id(item))
            size, height = 1 + scalars, 1
            for child in children:
                below = checked[id(child)]
                size += below[0]
                height = max(height, below[1] + 1)
            if size > MAX_VALUES:
                return _path(parent, key), (
                    f"has more than {MAX_VALUES:,} values (the max document size in "
                    "values; shared or aliased parts count each time they appear)"
                )
            checked[id(item)] = (size, height)
            continue
        _, item, parent, key, depth = entry
        if not isinstance(item, dict | list | tuple):
            problem = _scalar_problem(item)
            if problem is not None:
                return _path(parent, key), problem
            continue
        seen = checked.get(id(item))
        if depth >= MAX_DEPTH or (seen is not None and depth + seen[1] > MAX_DEPTH):
            return _path(parent, key), f"is {_too_deep()}"
        if seen is not None:
            continue
        if id(item) in active:
            return _path(parent, key), "contains itself (a recursive value or YAML alias)"
        active.add(id(item))
        link = (parent, key)
        children: list[Any] = []
        exit_index = len(stack)
        stack.append(None)  # the exit entry, filled in below
        if isinstance(item, dict):
            for name in item:
                if not isinstance(name, str) or len(name) > MAX_KEY_CHARS:
                    return _path(parent, key), _key_problem(name)
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for name, element in pairs:
            kind = type(element)
            if kind in _PLAIN:
                continue
            if isinstance(element, dict | list | tuple):
                children.append(element)
                stack.append((False, element, link, name, depth + 1))
                continue
            problem = _scalar_problem(element)
            if problem is not None:
                return _path(link, name), problem
        stack[exit_index] = (True, item, parent, key, len(item) - len(children), children)
    return None


_PLAIN = frozenset({str, float, bool, type(None), bytes})


def _scalar_problem(value: Any) -> str | None:
    if type(value) in _PLAIN:
        return None
    if type(value) is int:
        return (
            "is an integer too large to write as JSON"
            if value.bit_length() > MAX_INT_BITS
            else None
        )
    return _foreign(value)


def _key_problem(name: Any) -> str:
    if not isinstance(name, str):
        return (
            f"has a key {bounded_repr(name, 40)} ({type(name).__name__}); "
            "mapping keys must be text, as in JSON"
        )
    if len(name) > MAX_KEY_CHARS:
        return (
            f"has a key of {len(name):,} characters, {bounded_repr(name, 40)}; "
            f"the max key length is {MAX_KEY_CHARS}"
        )
    return ""


def _foreign(value: Any) -> str | None:
    if isinstance(value, datetime.date | datetime.time):
        kind = "a date" if type(value) is datetime.date else "a date and time"
        return (
            f"is {kind} (YAML reads an unquoted {value.isoformat()[:19]} as one), not a "
            "JSON value; quote it to pass the text"
        )
    if isinstance(value, set | frozenset):
        return "is a set (YAML !!set), not a JSON value; use a list"
    return None


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('nodes', 2, 'type')`` -> ``nodes[2].type``."""
    text = ""
    if len(loc) > 12:  # a 100-deep path: its start and end say where
        text = format_loc(loc[:8]) + f"...({len(loc) - 10} more)..."
        loc = loc[-2:]
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _path(parent: Any, key: Any) -> tuple[Any, ...]:
    parts = [] if key is None else [key]
    while parent is not None:
        parent, key = parent
        if key is not None:
            parts.append(key)
    return tuple(reversed(parts))
