"""ComfyUI's dynamic inputs (V3): inputs whose names depend on what a prompt holds.

    >>> declared = {"required": {"values": ("COMFY_AUTOGROW_V3", {"template": {
    ...     "input": {"required": {"v": ("FLOAT", {})}}, "names": ["a", "b"], "min": 1}})}}
    >>> expanded = expand(declared, {"values.a": 1.5})
    >>> sorted(expanded.inputs), nest({"values.a": 1.5}, expanded)
    (['values.a', 'values.b'], {'values': {'a': 1.5}})

Three input types stand for a family of inputs, all named with dots:

- **Autogrow** (``COMFY_AUTOGROW_V3``): slots ``<group>.<name>`` from a names list, or
  ``<group>.<prefix><i>`` for ``i`` from 0 below ``max``; the first ``min`` are
  required when the template input is.
- **DynamicCombo** (``COMFY_DYNAMICCOMBO_V3``): a choice whose selected option brings
  its own inputs, ``<combo>.<input>``, recursively.
- **DynamicSlot** (``COMFY_DYNAMICSLOT_V3``): a socket that, when linked, brings
  ``<slot>.<input>``.

A prompt keeps the names flat (``"values.a": ["15", 0]``). Before a node runs, ComfyUI
expands the class's declared inputs against the keys present (``expand``) and nests
the values back (``nest``): an Autogrow group becomes a dict of its present slots (``{}``
when none), a DynamicCombo ``{"<combo>": key, "<input>": value, ...}``. This module
follows ``comfy_api/latest/_io.py`` (``get_finalized_class_inputs``,
``build_nested_inputs``). Declarations are ComfyUI's V1 form, ``(type, options)``
tuples by category, as ``INPUT_TYPES()`` and ``/object_info`` give them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
DYNAMIC_SLOT = "COMFY_DYNAMICSLOT_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
DYNAMIC_TYPES = frozenset({AUTOGROW, DYNAMIC_COMBO, DYNAMIC_SLOT})
"""Input types that stand for a family of dotted inputs."""

CATEGORIES = ("required", "optional")

Declared = tuple[str, Mapping[str, Any]]
"""One declared input: its type and its options."""


@dataclass
class Expanded:
    """A class's inputs for one prompt node: every input by its flat name, and where
    nesting puts each dynamic value (``paths``); ``empty`` groups nest as ``{}``."""

    inputs: dict[str, tuple[str, Declared]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)

    def category(self, name: str) -> str | None:
        found = self.inputs.get(name)
        return None if found is None else found[0]


def declared_of(value: Any) -> Declared:
    """A declaration in its ``(type, options)`` form (a bare type has no options)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, list | tuple) and value:
        options = value[1] if len(value) > 1 and isinstance(value[1], Mapping) else {}
        kind = value[0]
        return ("COMBO" if isinstance(kind, list | tuple) else str(kind)), options
    return "*", {}


def sections_of(value: Any) -> dict[str, Mapping[str, Any]]:
    """The ``required`` and ``optional`` sections of a nested declaration."""
    if not isinstance(value, Mapping):
        return {}
    return {c: value[c] for c in CATEGORIES if isinstance(value.get(c), Mapping)}


def is_dynamic(kind: str) -> bool:
    return kind in DYNAMIC_TYPES


def expand(declared: Mapping[str, Any], live: Mapping[str, Any]) -> Expanded:
    """The inputs of a class for a node whose inputs are ``live`` (values by flat
    name: a DynamicCombo's value selects its option)."""
    expanded = Expanded()
    _expand_sections(expanded, live, sections_of(declared), ())
    return expanded


def _expand_sections(
    out: Expanded, live: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], prefix: tuple
) -> None:
    for category, section in sections.items():
        for name, value in section.items():
            declared = declared_of(value)
            path = (*prefix, str(name))
            flat = ".".join(path)
            kind, options = declared
            if kind == AUTOGROW:
                _expand_autogrow(out, live, category, options, path)
            elif kind == DYNAMIC_COMBO:
                selected = option_inputs(options, live.get(flat))
                if selected is not None:
                    _expand_sections(out, live, selected, path)
                    out.inputs[flat] = (category, declared)
                    out.paths[flat] = f"{flat}.{path[-1]}"
            elif kind == DYNAMIC_SLOT:
                if flat in live:
                    _expand_sections(out, live, sections_of(options.get("inputs")), path)
                    out.inputs[flat] = ("optional", declared)
                    out.paths[flat] = f"{flat}.{path[-1]}"
            else:
                out.inputs[flat] = (category, declared)
                if prefix:
                    out.paths[flat] = flat


def option_inputs(options: Mapping[str, Any], key: Any) -> dict[str, Mapping[str, Any]] | None:
    """The input sections of a DynamicCombo's option ``key`` (``None``: no such option)."""
    for option in options.get("options") or ():
        if isinstance(option, Mapping) and option.get("key") == key:
            return sections_of(option.get("inputs"))
    return None


def option_keys(options: Mapping[str, Any]) -> list[Any]:
    return [o.get("key") for o in options.get("options") or () if isinstance(o, Mapping)]


def autogrow_slots(options: Mapping[str, Any]) -> tuple[list[str], int, str, Declared] | None:
    """An Autogrow's slot names, its minimum, and its template's category and
    declaration; ``None`` for a template that cannot be read."""
    template = options.get("template")
    if not isinstance(template, Mapping):
        return None
    sections = sections_of(template.get("input"))
    category, declared = "required", None
    for category in CATEGORIES:
        section = sections.get(category) or {}
        if section:
            declared = declared_of(next(iter(section.values())))
            break
    if declared is None:
        return None
    names = template.get("names")
    if isinstance(names, list | tuple):
        slots = [str(n) for n in names]
    else:
        prefix = str(template.get("prefix", ""))
        count = template.get("max", 10)
        slots = [f"{prefix}{i}" for i in range(count if isinstance(count, int) else 10)]
    minimum = template.get("min", 1)
    return slots, minimum if isinstance(minimum, int) else 1, category, declared


def _expand_autogrow(
    out: Expanded, live: Mapping[str, Any], category: str, options: Mapping[str, Any], path: tuple
) -> None:
    found = autogrow_slots(options)
    if found is None:
        return
    slots, minimum, template_category, declared = found
    group = ".".join(path)
    present = False
    for index, slot in enumerate(slots):
        flat = f"{group}.{slot}"
        required = index < minimum and template_category == "required" and category == "required"
        out.inputs[flat] = ("required" if required else "optional", declared)
        if flat in live:
            present = True
            out.paths[flat] = flat
    if not present:
        out.paths[group] = group
        out.empty.add(group)


def nest(values: Mapping[str, Any], expanded: Expanded, tag_keys: bool = False) -> dict[str, Any]:
    """Flat dotted values -> the nested dicts a V3 node's methods receive.

    With ``tag_keys`` each dynamic value is ``(value, flat key)``, as
    ``check_lazy_status`` gets them so that it can answer with flat keys.
    """
    if not expanded.paths:
        return dict(values)
    flat = dict(values)
    nested: dict[str, Any] = {}
    for key, path in expanded.paths.items():
        parts = path.split(".")
        current = nested
        for part in parts[:-1]:
            current = current.setdefault(part, {})
        value = flat.pop(key, None)
        if value is None and key in expanded.empty:
            value = {}
        current[parts[-1]] = (value, key) if tag_keys else value
    flat.update(nested)
    return flat


def lookup(declared: Mapping[str, Any], name: str) -> tuple[str, Declared] | None:
    """An input of the class by its flat name, whatever the prompt selects: ``values.a``
    of an Autogrow, ``combo.width`` of any option of a DynamicCombo."""
    return _lookup(sections_of(declared), name.split("."))


def _lookup(sections: Mapping[str, Mapping[str, Any]], parts: list[str]) -> Any:
    head, rest = parts[0], parts[1:]
    for category, section in sections.items():
        if head not in section:
            continue
        declared = declared_of(section[head])
        kind, options = declared
        if not rest:
            return category, declared
        if kind == AUTOGROW:
            found = autogrow_slots(options)
            if found is None or len(rest) != 1 or rest[0] not in found[0]:
                return None
            slots, minimum, template_category, template = found
            required = (
                slots.index(rest[0]) < minimum
                and template_category == "required"
                and category == "required"
            )
            return ("required" if required else "optional"), template
        if kind == DYNAMIC_COMBO:
            for option in options.get("options") or ():
                if isinstance(option, Mapping):
                    hit = _lookup(sections_of(option.get("inputs")), rest)
                    if hit is not None:
                        return hit
            return None
        if kind == DYNAMIC_SLOT:
            return _lookup(sections_of(options.get("inputs")), rest)
        return None
    return None


def walk(
    declared: Mapping[str, Any], selection: Callable[[str], Any], prefix: str = ""
) -> Iterator[tuple[str, str, Declared]]:
    """Every input in the frontend's order, ``(flat name, category, declaration)``: a
    DynamicCombo is followed by the inputs of its selected option (asked of
    ``selection`` once the combo itself has been yielded), depth first; Autogrow
    groups and DynamicSlots yield nothing, being sockets the frontend adds on demand."""
    for category, section in sections_of(declared).items():
        for name, value in section.items():
            flat = f"{prefix}{name}"
            declared_input = declared_of(value)
            kind, options = declared_input
            if kind in (AUTOGROW, DYNAMIC_SLOT):
                continue
            yield flat, category, declared_input
            if kind == DYNAMIC_COMBO:
                chosen = option_inputs(options, selection(flat))
                if chosen is not None:
                    yield from walk(chosen, selection, f"{flat}.")
