"""Port type names: derived from annotations, compared across edges, checked on values.

    >>> from integration.graph.types import type_name, is_compatible
    >>> type_name(int), is_compatible("int", "float"), is_compatible("str", "int")
    ('int', True, False)

A port type is a plain string, so graph documents, ComfyUI types (``IMAGE``) and Python
annotations share one vocabulary. ``any`` matches everything.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from integration.errors import bounded_repr

ANY = "any"

_BUILTIN_NAMES: dict[Any, str] = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "dict",
    Any: ANY,
    object: ANY,
}

# Edges that convert losslessly are allowed without a transform. Numbers and lists
# feed array ports because numpy broadcasts scalars and converts lists.
_WIDENINGS = {
    ("int", "float"),
    ("bool", "int"),
    ("bool", "float"),
    ("int", "ndarray"),
    ("float", "ndarray"),
    ("list", "ndarray"),
}


def _is_ndarray(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    # numpy scalars, without importing numpy here
    return type(value).__module__ == "numpy" and hasattr(value, "item") and value.ndim == 0


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and type(value).__name__.startswith(("int", "uint"))


_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_number,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool) or type(v).__name__ == "bool_",
    "bytes": lambda v: isinstance(v, bytes),
    "list": lambda v: isinstance(v, list | tuple),
    "dict": lambda v: isinstance(v, Mapping),
    "ndarray": lambda v: _is_ndarray(v) or _is_number(v) or isinstance(v, list | tuple),
}

KNOWN_TYPES = frozenset([ANY, *_VALUE_CHECKS])


def type_name(annotation: Any) -> tuple[str, bool]:
    """Return ``(type name, nullable)`` for an annotation.

    ``X | None`` gives ``X``'s name and ``nullable=True``. Unions of several types and
    unknown generics give ``any``. A class outside the builtin vocabulary gives its own
    name, so custom types only connect to ports of the same name.
    """
    if annotation is None or annotation is type(None):
        return ANY, True
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) != len(typing.get_args(annotation))
        if len(members) == 1:
            return type_name(members[0])[0], nullable
        return ANY, nullable
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {type(v) for v in values}
        return (_BUILTIN_NAMES.get(kinds.pop(), ANY) if len(kinds) == 1 else ANY), False
    if origin is not None:
        if origin in (list, tuple, Sequence) or (
            isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str
        ):
            return "list", False
        if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            return "dict", False
        if getattr(origin, "__name__", "") == "ndarray":
            return "ndarray", False
        return ANY, False
    if annotation in _BUILTIN_NAMES:
        return _BUILTIN_NAMES[annotation], False
    if isinstance(annotation, str):
        return annotation, False
    if isinstance(annotation, type):
        if annotation.__name__ == "ndarray" and annotation.__module__ == "numpy":
            return "ndarray", False
        if issubclass(annotation, Mapping):
            return "dict", False
        return annotation.__name__, False
    return ANY, False


def is_compatible(source: str, target: str) -> bool:
    """Whether a value of port type ``source`` may flow into a port of type ``target``."""
    if source == target or ANY in (source, target):
        return True
    return (source, target) in _WIDENINGS


def check_value(type_: str, value: Any) -> str | None:
    """Return why ``value`` cannot be a literal for a port of ``type_``, or ``None``.

    Custom type names cannot be checked from a literal and accept anything.
    """
    check = _VALUE_CHECKS.get(type_)
    if check is None or check(value):
        return None
    return f"expected {type_}, got {type(value).__name__} {bounded_repr(value)}"
