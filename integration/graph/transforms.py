"""Edge transforms: named, registered conversions applied to a value on its way.

    >>> from integration.graph.transforms import TransformSpec, apply_transform
    >>> apply_transform(TransformSpec.parse({"json_path": "$.a.b[1]"}), {"a": {"b": [5, 6]}})
    6

A transform is data, never code: a name from the registry plus an optional argument,
so graph documents stay safe to load and the transform can join the consumer's cache key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from integration.errors import bounded_repr
from integration.graph.types import ANY


@dataclass(frozen=True)
class Transform:
    """A registered conversion: ``fn(value, arg)``; ``output_type`` is what it yields."""

    name: str
    fn: Callable[[Any, Any], Any]
    output_type: str = ANY
    takes_arg: bool = False
    description: str = ""


@dataclass(frozen=True)
class TransformSpec:
    """A transform as written on an edge: its name and argument."""

    name: str
    arg: Any = None

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any]) -> TransformSpec:
        """Read ``"int"`` or ``{"index": 0}``. Raises ``ValueError`` on any other shape."""
        if isinstance(raw, str):
            return cls(raw)
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((name, arg),) = raw.items()
            return cls(str(name), arg)
        raise ValueError(
            "a transform is a name such as 'int' or a one-key mapping such as {index: 0}, "
            f"not {bounded_repr(raw)}"
        )

    def canonical(self) -> list[Any]:
        """A JSON-ready form, stable across runs, for cache keys."""
        return [self.name, self.arg]


_REGISTRY: dict[str, Transform] = {}


def register_transform(transform: Transform) -> Transform:
    """Add a transform; names are unique."""
    if transform.name in _REGISTRY:
        raise ValueError(f"transform {transform.name!r} is already registered")
    _REGISTRY[transform.name] = transform
    return transform


def get_transform(name: str) -> Transform | None:
    return _REGISTRY.get(name)


def transform_names() -> list[str]:
    return sorted(_REGISTRY)


def check_spec(spec: TransformSpec) -> str | None:
    """Why ``spec`` cannot be applied, or ``None``; checked before anything runs."""
    transform = _REGISTRY.get(spec.name)
    if transform is None:
        return f"unknown transform {bounded_repr(spec.name)}; known: {', '.join(transform_names())}"
    if transform.takes_arg and spec.arg is None:
        return f"transform {spec.name!r} needs an argument, as in {{{spec.name}: ...}}"
    if not transform.takes_arg and spec.arg is not None:
        return f"transform {spec.name!r} takes no argument; write it as '{spec.name}'"
    if spec.name == "json_path":
        try:
            parse_json_path(spec.arg)
        except ValueError as exc:
            return str(exc)
    return None


def apply_transform(spec: TransformSpec, value: Any) -> Any:
    return _REGISTRY[spec.name].fn(value, spec.arg)


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def parse_json_path(path: Any) -> list[str | int]:
    """Parse the small JSONPath subset ``$.a.b[0]['c d']`` into keys and indexes."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ValueError(
            f"json_path must start with '$', as in '$.a.b[0]', not {bounded_repr(path)}"
        )
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            raise ValueError(
                f"json_path {bounded_repr(path)}: cannot read from position {position}"
            )
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name or quoted))
        position = match.end()
    return steps


def _json_path(value: Any, path: str) -> Any:
    for step in parse_json_path(path):
        value = value[step]
    return value


def _parse_bool(value: Any, _: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off", ""):
            return False
        raise ValueError(f"cannot read {bounded_repr(value)} as a boolean")
    return bool(value)


for _transform in (
    Transform("int", lambda v, _: int(v), "int", description="int(value)"),
    Transform("float", lambda v, _: float(v), "float", description="float(value)"),
    Transform("str", lambda v, _: str(v), "str", description="str(value)"),
    Transform("bool", _parse_bool, "bool", description="true/false, yes/no, 1/0"),
    Transform("json", lambda v, _: json.loads(v), ANY, description="parse a JSON string"),
    Transform("to_json", lambda v, _: json.dumps(v), "str", description="dump to JSON"),
    Transform("list", lambda v, _: list(v), "list", description="list(value)"),
    Transform("index", lambda v, i: v[i], ANY, True, "value[i] of a list"),
    Transform("key", lambda v, k: v[k], ANY, True, "value[k] of a mapping"),
    Transform("json_path", _json_path, ANY, True, "value at a path like $.a.b[0]"),
    Transform("wrap", lambda v, k: {k: v}, "dict", True, "{k: value}, e.g. for core.format"),
):
    register_transform(_transform)
