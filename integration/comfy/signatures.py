"""Node class signatures: what a ComfyUI class takes and returns.

    >>> class Add:
    ...     @classmethod
    ...     def INPUT_TYPES(cls):
    ...         return {"required": {"a": ("INT", {"default": 1, "min": 0}), "b": ("INT",)}}
    ...     RETURN_TYPES = ("INT",)
    ...     FUNCTION = "add"
    >>> signature = Signature.from_class("Add", Add)
    >>> [i.name for i in signature.widgets()], signature.input("a").minimum
    (['a', 'b'], 0)

Signatures come from loaded classes (``NODE_CLASS_MAPPINGS``) or from the JSON that a
ComfyUI install serves at ``/object_info``, so workflows can be checked against node
packs that are not installed here. Import uses them to name widget values and to check
links; validation uses them for ComfyUI's error types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from integration.comfy import dynamic
from integration.comfy.shapes import name_of
from integration.errors import NodegraphError, summarize_value

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", dynamic.DYNAMIC_COMBO})
"""Input types the ComfyUI frontend draws as widgets (values in ``widgets_values``)."""

_COMFY_TYPES = {"int": "INT", "float": "FLOAT", "str": "STRING", "bool": "BOOLEAN", "any": "*"}
"""nodegraph port types by the ComfyUI type names they show as."""

SEED_NAMES = frozenset({"seed", "noise_seed"})
"""INT inputs that get a ``control_after_generate`` widget without asking for one."""

Category = Literal["required", "optional", "hidden"]


class SignatureError(NodegraphError, ValueError):
    """A signature file or a class's ``INPUT_TYPES`` cannot be read."""


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class. ``type`` is ``COMBO`` for a list of choices."""

    name: str
    type: str
    category: Category
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy"))

    @property
    def raw_link(self) -> bool:
        return bool(self.options.get("rawLink"))

    @property
    def force_input(self) -> bool:
        return bool(self.options.get("forceInput"))

    @property
    def minimum(self) -> Any:
        return self.options.get("min")

    @property
    def maximum(self) -> Any:
        return self.options.get("max")

    @property
    def has_default(self) -> bool:
        return "default" in self.options

    @property
    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.choices:
            return self.choices[0]
        return None

    @property
    def is_widget(self) -> bool:
        """Whether the frontend shows it as a widget (its value is in widgets_values)."""
        return self.category != "hidden" and self.type in WIDGET_TYPES and not self.force_input

    @property
    def has_control_widget(self) -> bool:
        """Whether the frontend adds a ``control_after_generate`` value after it."""
        if not self.is_widget:
            return False
        if self.options.get("control_after_generate"):
            return True
        return self.type == "INT" and self.name in SEED_NAMES

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.choices is not None:
            described["choices"] = list(self.choices)
        described.update({k: v for k, v in self.options.items() if _jsonable(v)})
        return described


@dataclass(frozen=True)
class Signature:
    """A node class's inputs (required, optional, hidden, in order) and outputs."""

    class_type: str
    inputs: tuple[InputSpec, ...]
    return_types: tuple[str, ...]
    return_names: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    output_node: bool = False
    input_is_list: bool = False
    display_name: str = ""
    category: str = ""

    def input(self, name: str) -> InputSpec | None:
        """An input by name; a dotted name is looked up through the dynamic inputs
        (``values.a`` of an Autogrow, ``combo.width`` of any option of a combo)."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        if "." not in name:
            return None
        found = dynamic.lookup(self.declared, name)
        return None if found is None else _input(self.class_type, name, *found)

    @cached_property
    def declared(self) -> dict[str, dict[str, Any]]:
        """The visible inputs in ComfyUI's V1 form: ``(type, options)`` by category."""
        sections: dict[str, dict[str, Any]] = {}
        for spec in self.visible_inputs():
            kind = list(spec.choices) if spec.type == "COMBO" and spec.choices else spec.type
            sections.setdefault(spec.category, {})[spec.name] = (kind, spec.options)
        return sections

    @cached_property
    def has_dynamic_inputs(self) -> bool:
        return any(dynamic.is_dynamic(spec.type) for spec in self.inputs)

    def expanded(self, live: Mapping[str, Any]) -> list[InputSpec]:
        """The inputs of a node whose inputs are ``live`` (values by flat name), dynamic
        ones expanded as ComfyUI expands them before validating or running a node."""
        if not self.has_dynamic_inputs:
            return self.visible_inputs()
        expanded = dynamic.expand(self.declared, live)
        return [
            _input(self.class_type, name, category, declared)
            for name, (category, declared) in expanded.inputs.items()
        ]

    def live_widgets(self, selection: Callable[[str], Any]) -> Iterator[InputSpec]:
        """The widgets in the frontend's order, a DynamicCombo followed by its selected
        option's widgets (``selection(name)`` gives a combo's value once the combo has
        been yielded)."""
        if not self.has_dynamic_inputs:
            yield from self._widgets
            return
        for name, category, declared in dynamic.walk(self.declared, selection):
            spec = _input(self.class_type, name, category, declared)  # type: ignore[arg-type]
            if spec.is_widget:
                yield spec

    def visible_inputs(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.category != "hidden"]

    def widgets(self) -> list[InputSpec]:
        return list(self._widgets)

    @cached_property
    def _widgets(self) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.is_widget)

    def hidden(self) -> dict[str, str]:
        return {spec.name: spec.type for spec in self.inputs if spec.category == "hidden"}

    def to_object_info(self) -> dict[str, Any]:
        """The signature as ComfyUI's ``/object_info`` describes a class."""
        sections: dict[str, dict[str, Any]] = {}
        for spec in self.inputs:
            if spec.category == "hidden":
                declared: Any = spec.type
            else:
                options = {k: v for k, v in spec.options.items() if _jsonable(v)}
                kind: Any = spec.type
                if spec.choices is not None and "options" not in options:
                    kind = list(spec.choices)  # V1's form; V3's keeps them in "options"
                declared = [kind, options] if options else [kind]
            sections.setdefault(spec.category, {})[spec.name] = declared
        return {
            "input": sections,
            "input_order": {
                category: list(section)
                for category, section in sections.items()
                if category != "hidden"
            },
            "is_input_list": self.input_is_list,
            "output": list(self.return_types),
            "output_is_list": list(self.output_is_list),
            "output_name": list(self.return_names),
            "name": self.class_type,
            "display_name": self.display_name,
            "category": self.category,
            "output_node": self.output_node,
        }

    @classmethod
    def from_class(cls, class_type: str, node_class: Any) -> Signature:
        """Read a V1 class: ``INPUT_TYPES()``, ``RETURN_TYPES`` and the rest."""
        where = f"node class {class_type!r}"
        try:
            declared = node_class.INPUT_TYPES()
        except Exception as exc:
            raise SignatureError(f"{where}: INPUT_TYPES() failed: {exc!r}") from exc
        return cls(
            class_type=class_type,
            inputs=tuple(_inputs(where, declared)),
            **_outputs(
                getattr(node_class, "RETURN_TYPES", ()),
                getattr(node_class, "RETURN_NAMES", None),
                getattr(node_class, "OUTPUT_IS_LIST", None),
            ),
            output_node=bool(getattr(node_class, "OUTPUT_NODE", False)),
            input_is_list=bool(getattr(node_class, "INPUT_IS_LIST", False)),
            category=str(getattr(node_class, "CATEGORY", "")),
        )

    @classmethod
    def from_node_type(cls, node_type: Any) -> Signature:
        """A nodegraph node type described as a ComfyUI class, so that ComfyUI's editor
        and clients can use it: ports as inputs (literal types as widgets, with their
        default, min, max and choices), outputs in port order, ``nodegraph/<pack>`` as
        the category."""
        inputs = []
        for port in node_type.inputs.values():
            options: dict[str, Any] = {}
            if not port.required and _jsonable(port.default):
                options["default"] = port.default
            for key in ("min", "max"):
                if getattr(port, key) is not None:
                    options[key] = getattr(port, key)
            if port.description:
                options["tooltip"] = port.description
            kind = "COMBO" if port.choices else _COMFY_TYPES.get(port.type, port.type.upper())
            category: Category = "required" if port.required else "optional"
            choices = tuple(port.choices) if port.choices else None
            inputs.append(InputSpec(port.name, kind, category, options, choices))
        outputs = list(node_type.outputs.values())
        return cls(
            class_type=node_type.qualified_name,
            inputs=tuple(inputs),
            return_types=tuple(_COMFY_TYPES.get(o.type, o.type.upper()) for o in outputs),
            return_names=tuple(o.name for o in outputs),
            output_is_list=(False,) * len(outputs),
            display_name=node_type.qualified_name,
            category=f"nodegraph/{node_type.pack or 'nodes'}",
        )

    @classmethod
    def from_object_info(cls, class_type: str, info: Mapping[str, Any]) -> Signature:
        """Read one entry of ComfyUI's ``/object_info`` JSON."""
        where = f"object_info entry {class_type!r}"
        declared = dict(info.get("input") or {})
        order = info.get("input_order") or {}
        for category, names in order.items():
            # object_info's dicts lose no order in JSON, but input_order is authoritative
            section = declared.get(category) or {}
            declared[category] = {n: section[n] for n in names if n in section} | section
        return cls(
            class_type=class_type,
            inputs=tuple(_inputs(where, declared)),
            **_outputs(info.get("output"), info.get("output_name"), info.get("output_is_list")),
            output_node=bool(info.get("output_node", False)),
            input_is_list=bool(info.get("is_input_list", info.get("input_is_list", False))),
            display_name=str(info.get("display_name") or ""),
            category=str(info.get("category") or ""),
        )


def _outputs(types: Any, names: Any, is_list: Any) -> dict[str, tuple[Any, ...]]:
    """Return types, names (the types where none are given) and list flags (padded)."""
    return_types = tuple(_type_name(t) for t in types or ())
    flags = tuple(bool(x) for x in is_list or ())
    return {
        "return_types": return_types,
        "return_names": tuple(str(n) for n in (names or return_types)),
        "output_is_list": flags + (False,) * (len(return_types) - len(flags)),
    }


def _type_name(declared: Any) -> str:
    if isinstance(declared, list | tuple):
        return "COMBO"
    return str(declared)


def _inputs(where: str, declared: Any) -> Iterator[InputSpec]:
    if not isinstance(declared, Mapping):
        raise SignatureError(f"{where}: INPUT_TYPES must be a dict, not {type(declared).__name__}")
    for category in ("required", "optional", "hidden"):
        section = declared.get(category) or {}
        if not isinstance(section, Mapping):
            raise SignatureError(f"{where}: INPUT_TYPES[{category!r}] must be a dict")
        for name, spec in section.items():
            yield _input(where, str(name), category, spec)


def _input(where: str, name: str, category: Category, spec: Any) -> InputSpec:
    if category == "hidden" and isinstance(spec, str):
        return InputSpec(name, spec, category)
    if isinstance(spec, str):
        spec = (spec,)
    if not isinstance(spec, list | tuple) or not spec:
        raise SignatureError(
            f"{where}: input {name!r} must be (type, options), got {summarize_value(spec)}"
        )
    declared_type = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    choices = None
    if isinstance(declared_type, list | tuple):
        choices = tuple(declared_type)
    elif declared_type == "COMBO" and isinstance(options.get("options"), list | tuple):
        choices = tuple(options["options"])
    elif declared_type == dynamic.DYNAMIC_COMBO:
        choices = tuple(dynamic.option_keys(options))
    if isinstance(declared_type, str) and (
        dynamic.is_dynamic(declared_type) or declared_type == dynamic.MATCH_TYPE
    ):
        options = _as_json(options)  # the same whether read from a class or from JSON
    return InputSpec(name, _type_name(declared_type), category, dict(options), choices)


def _as_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    return value


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class Signatures:
    """Signatures by class type, from loaded packs and signature files."""

    def __init__(self, found: Mapping[str, Signature] | None = None) -> None:
        self._found: dict[str, Signature] = dict(found or {})

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._found

    def __len__(self) -> int:
        return len(self._found)

    def get(self, class_type: str) -> Signature | None:
        return self._found.get(class_type)

    def update(self, other: Signatures) -> None:
        self._found.update(other._found)

    @classmethod
    def from_object_info(cls, data: Mapping[str, Any]) -> Signatures:
        return cls({name: Signature.from_object_info(name, info) for name, info in data.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> Signatures:
        """Read a JSON file saved from a ComfyUI install's ``GET /object_info``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SignatureError(f"signature file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SignatureError(f"signature file {path} is not readable JSON: {exc}") from None
        except RecursionError:
            raise SignatureError(f"signature file {path} nests too deep to read") from None
        if not isinstance(data, dict):
            raise SignatureError(
                f"signature file {path} must map class types to object_info entries"
            )
        try:
            return cls.from_object_info(data)
        except (AttributeError, TypeError, ValueError, RecursionError) as exc:
            problem = name_of(str(exc), 200)
            raise SignatureError(f"signature file {path}: {problem}") from None

    @classmethod
    def from_registry(cls, registry: Any, extra: Signatures | None = None) -> Signatures:
        """The signatures of every ComfyUI class a ``NodeRegistry`` has loaded, and
        then ``extra`` (a signature file's, say), which wins where both name a class."""
        found = {}
        for node_type in registry:
            signature = getattr(node_type, "signature", None)
            if isinstance(signature, Signature):
                found[signature.class_type] = signature
        signatures = cls(found)
        if extra is not None:
            signatures.update(extra)
        return signatures
