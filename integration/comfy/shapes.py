"""Shape checks for ComfyUI files: every field a reader uses, checked before it is used.

    >>> slot_problem(-1)
    'a slot is a whole number from 0 to 1023, not -1'
    >>> api_entry_problems("4", {"class_type": ["KSampler"], "inputs": {}})
    ["node 4: class_type must be a non-empty string, not a list (['KSampler'])"]

Workflow files come from anywhere, so the readers (``workflow`` for UI and API files,
``validate`` for prompts) ask here first and report every problem by node and field,
instead of failing inside on the first field of an unexpected type. Numbers are bounded
where nodegraph cannot take them as they are (slots, canvas positions), and so is the
size of a flattened workflow; nesting depth and document size share the limits of graph
documents (``integration.graph.limits``). Values in messages are cut short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from integration.comfy.runtime import is_link
from integration.errors import summarize_value
from integration.graph.limits import MAX_DEPTH, format_loc, value_problem

MAX_SLOT = 1024
"""Input and output slots are whole numbers below this."""
MAX_SUBGRAPH_DEPTH = 64
"""How deep subgraph instances may nest inside one another."""
MAX_NODES = 100_000
"""How many nodes a UI workflow may have once its subgraphs are flattened."""
MAX_COORDINATE = 1e9
"""Canvas positions and sizes are finite numbers within +/- this."""

_KINDS = {
    dict: "an object",
    list: "a list",
    tuple: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def shown(value: Any) -> str:
    """A value as messages show it: its kind and a short prefix of its repr."""
    kind = _KINDS.get(type(value)) or (
        "an object" if isinstance(value, Mapping) else type(value).__name__
    )
    return f"{kind} ({summarize_value(value, 60)})"


def name_of(text: Any, limit: int = 60) -> str:
    """A name (a node id, a class type) as messages show it: as it is when it is a short
    string, else cut short like any value."""
    if isinstance(text, str) and len(text) <= limit and text.isprintable():
        return text
    return summarize_value(text, limit)


def wrong(field: str, expected: str, value: Any) -> str:
    """``field must be EXPECTED, not KIND (VALUE)``."""
    return f"{field} must be {expected}, not {shown(value)}"


def too_deep() -> str:
    """The message for a file that nests too deep to parse at all."""
    return f"nested deeper than {MAX_DEPTH} levels (the max nesting depth)"


def document_problem(data: Any) -> str | None:
    """What puts ``data`` past the limits graph documents have too, or ``None``.

    The depth is walked level by level first, which is quick; only data past it goes
    through ``integration.graph.limits.value_problem``, which says where."""
    if _depth_within(data, MAX_DEPTH):
        return None
    found = value_problem(data)
    if found is None:
        return too_deep()
    path, why = found
    return f"{format_loc(path) or 'the document'} {why}"


def _depth_within(data: Any, limit: int) -> bool:
    level, depth = [data], 1
    while level:
        if depth > limit:
            return False
        below = []
        for value in level:
            for child in value.values() if isinstance(value, Mapping) else value:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level, depth = below, depth + 1
    return True


def is_whole(value: Any) -> bool:
    """A JSON whole number: an int, or a float such as ``2.0`` (never a bool, inf or NaN)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def slot_problem(slot: Any) -> str | None:
    """Why ``slot`` is not a link slot (a whole number from 0 below ``MAX_SLOT``), or ``None``."""
    if is_whole(slot) and 0 <= slot < MAX_SLOT:
        return None
    return f"a slot is a whole number from 0 to {MAX_SLOT - 1}, not {summarize_value(slot, 40)}"


def is_id(value: Any) -> bool:
    """A node or link id: a whole number of at most 64 bits (not a bool) or a non-empty
    string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() <= 64
    return isinstance(value, str) and value != ""


# -- the API format -------------------------------------------------------------------


def api_entry_problems(node_id: str, entry: Any, inputs_required: bool = True) -> list[str]:
    """What is wrong with the shape of one prompt entry ``{class_type, inputs, _meta}``."""
    where = f"node {name_of(node_id)}"
    if not isinstance(entry, Mapping):
        return [f"{where}: {wrong('the entry', 'an object with class_type and inputs', entry)}"]
    class_type = entry.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        return [f"{where}: {wrong('class_type', 'a non-empty string', class_type)}"]
    where = f"node {name_of(node_id)} ({name_of(class_type)})"
    problems: list[str] = []
    inputs = entry.get("inputs")
    if inputs is None and not inputs_required and "inputs" not in entry:
        inputs = {}
    if not isinstance(inputs, Mapping):
        problems.append(f"{where}: {wrong('inputs', 'an object', inputs)}")
        inputs = {}
    for name, value in inputs.items():
        if not isinstance(name, str):
            problems.append(f"{where}: {wrong('an input name', 'a string', name)}")
        elif is_link(value):
            problem = slot_problem(value[1])
            if problem:
                problems.append(
                    f"{where} input {summarize_value(name, 60)}: links to node "
                    f"{name_of(value[0])}: {problem}"
                )
    meta = entry.get("_meta")
    if meta is not None and not isinstance(meta, Mapping):
        problems.append(f"{where}: {wrong('_meta', 'an object', meta)}")
    elif meta is not None:
        found: list[str] = []
        _fields(found, meta, (("title", str, "a string"),), "_meta.")
        problems.extend(f"{where}: {problem}" for problem in found)
    return problems


# -- the UI format --------------------------------------------------------------------


def body_problems(body: Mapping[str, Any], label: str) -> list[str]:
    """What is wrong with the shape of a workflow's or a subgraph's nodes and links."""
    problems: list[str] = []
    for key in ("nodes", "links"):
        value = body.get(key)
        if value is not None and not isinstance(value, list):
            problems.append(f"{label}: {wrong(key, 'a list', value)}")
    nodes = body.get("nodes") if isinstance(body.get("nodes"), list) else []
    for index, node in enumerate(nodes):
        problems.extend(node_problems(node, f"{label}: nodes[{index}]"))
    links = body.get("links") if isinstance(body.get("links"), list) else []
    for index, raw in enumerate(links):
        problem = link_problem(raw)
        if problem:
            problems.append(f"{label}: links[{index}] {problem}")
    return problems


def definitions_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the shape of ``definitions.subgraphs`` (not their bodies)."""
    definitions = data.get("definitions")
    if definitions is None:
        return []
    if not isinstance(definitions, Mapping):
        return [f"workflow: {wrong('definitions', 'an object', definitions)}"]
    subgraphs = definitions.get("subgraphs")
    if subgraphs is None:
        return []
    if not isinstance(subgraphs, list):
        return [f"workflow: {wrong('definitions.subgraphs', 'a list', subgraphs)}"]
    problems: list[str] = []
    seen: set[str] = set()
    for index, definition in enumerate(subgraphs):
        where = f"workflow: definitions.subgraphs[{index}]"
        if not isinstance(definition, Mapping):
            problems.append(f"{where}: {wrong('a subgraph', 'an object', definition)}")
            continue
        found: list[str] = []
        if not is_id(definition.get("id")):
            found.append(wrong("id", "a non-empty string", definition.get("id")))
        elif str(definition["id"]) in seen:
            found.append(f"subgraph id {name_of(definition['id'])} is used twice")
        else:
            seen.add(str(definition["id"]))
        _fields(found, definition, (("name", str, "a string"),))
        for key in ("inputs", "outputs"):
            _entries(found, definition, key, (("name", str, "a string"),))
        problems.extend(f"{where}: {problem}" for problem in found)
    return problems


_ID = "a whole number (64 bits at most) or a non-empty string"
_SLOT_TYPE = (str, int)
_SLOT_TYPE_TEXT = "a type name"


_NODE_FIELDS = (
    ("title", str, "a string"),
    ("flags", Mapping, "an object"),
    ("color", str, "a string"),
    ("bgcolor", str, "a string"),
)
_INPUT_FIELDS = (
    ("name", str, "a string"),
    ("type", _SLOT_TYPE, _SLOT_TYPE_TEXT),
    ("link", (int, str), "a link id"),
    ("widget", Mapping, "an object"),
)
_OUTPUT_FIELDS = (
    ("name", str, "a string"),
    ("type", _SLOT_TYPE, _SLOT_TYPE_TEXT),
    ("links", list, "a list"),
)
_PAIR = f"two finite numbers within +/-{MAX_COORDINATE:g}"


def node_problems(node: Any, where: str) -> list[str]:
    """What is wrong with the shape of one UI node (``where`` names its place)."""
    if not isinstance(node, Mapping):
        return [f"{where}: {wrong('a node', 'an object with an id and a type', node)}"]
    node_id, node_type = node.get("id"), node.get("type")
    if not is_id(node_id):
        return [f"{where}: {wrong('id', _ID, node_id)}"]
    if not isinstance(node_type, str) or not node_type:
        return [f"{where}: node {node_id}: {wrong('type', 'a non-empty string', node_type)}"]
    found: list[str] = []  # "field must be ..., not ...", the node named once at the end
    mode = node.get("mode")
    if mode is not None and not is_whole(mode):
        found.append(wrong("mode", "a whole number (0, 2 muted, 4 bypassed)", mode))
    _fields(found, node, _NODE_FIELDS)
    for key in ("pos", "size"):
        if node.get(key) is not None and not _is_pair(node[key]):
            found.append(wrong(key, _PAIR, node[key]))
    properties = node.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        found.append(wrong("properties", "an object", properties))
    elif properties is not None:
        _fields(found, properties, (("nodegraph_id", str, "a string"),), "properties.")
        proxies = properties.get("proxyWidgets")
        if proxies is not None and not isinstance(proxies, list | str):
            found.append(wrong("properties.proxyWidgets", "a list", proxies))
    values = node.get("widgets_values")
    if node_type == "PrimitiveNode":
        if values is not None and not isinstance(values, list):
            found.append(wrong("widgets_values", "a list", values))
    elif values is not None and not isinstance(values, list | Mapping):
        found.append(wrong("widgets_values", "a list or an object", values))
    _entries(found, node, "inputs", _INPUT_FIELDS, required="name")
    _entries(found, node, "outputs", _OUTPUT_FIELDS)
    if not found:
        return []
    where = f"{where}: node {name_of(node_id)} ({name_of(node_type)})"
    return [f"{where}: {problem}" for problem in found]


def _fields(
    found: list[str], entry: Mapping[str, Any], fields: tuple[Any, ...], prefix: str = ""
) -> None:
    for key, kinds, expected in fields:
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            found.append(wrong(prefix + key, expected, value))


def _entries(
    found: list[str],
    owner: Mapping[str, Any],
    key: str,
    fields: tuple[Any, ...],
    required: str | None = None,
) -> None:
    entries = owner.get(key)
    if entries is None:
        return
    if not isinstance(entries, list):
        found.append(wrong(key, "a list", entries))
        return
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            found.append(wrong(f"{key}[{index}]", "an object", entry))
            continue
        if required is not None and entry.get(required) is None:
            found.append(f"{key}[{index}] has no {required}")
        _fields(found, entry, fields, f"{key}[{index}].")
        widget = entry.get("widget")
        if isinstance(widget, Mapping):
            _fields(found, widget, (("name", str, "a string"),), f"{key}[{index}].widget.")


def _is_pair(value: Any) -> bool:
    if isinstance(value, Mapping):
        value = [value.get("0", value.get(0)), value.get("1", value.get(1))]
    elif not isinstance(value, list | tuple):
        return False
    return len(value) >= 2 and _is_coordinate(value[0]) and _is_coordinate(value[1])


def _is_coordinate(value: Any) -> bool:
    # exact types: a bool is not a coordinate; NaN fails both comparisons
    if type(value) is int or type(value) is float:
        return -MAX_COORDINATE <= value <= MAX_COORDINATE
    return False


_LINK_KEYS = ("id", "origin_id", "origin_slot", "target_id", "target_slot")


def link_problem(raw: Any) -> str | None:
    """What is wrong with the shape of one UI link, or ``None``.

    A link is ``[id, origin id, origin slot, target id, target slot, type]`` (0.4) or an
    object with those keys (1).
    """
    if isinstance(raw, list) and len(raw) >= 5:
        fields = dict(zip(_LINK_KEYS, raw, strict=False))
    elif isinstance(raw, Mapping):
        missing = [key for key in _LINK_KEYS if key not in raw]
        if missing:
            return f"has no {', '.join(missing)}"
        fields = {key: raw[key] for key in _LINK_KEYS}
    else:
        return f"is neither [id, origin, slot, target, slot, type] nor a link object: {shown(raw)}"
    for key in ("id", "origin_id", "target_id"):
        if not is_id(fields[key]):
            return wrong(key, _ID, fields[key])
    for key in ("origin_slot", "target_slot"):
        problem = slot_problem(fields[key])
        if problem:
            return f"{key}: {problem}"
    return None
