"""Port specifications: what a node accepts and what it produces.

    >>> from integration.graph.ports import InputPort
    >>> InputPort("steps", "int", min=1, max=100).check(0)
    'must be >= 1, got 0'

``Port`` is the author-facing marker used in ``Annotated[...]`` or in ``@node(inputs=...)``;
``InputPort`` and ``OutputPort`` are the resolved specs the registry and validator use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from integration.errors import bounded_repr, summarize_value
from integration.graph.types import ANY, check_value

_MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()
MISSING = _MISSING


@dataclass(frozen=True)
class Port:
    """Extra facts about a port that an annotation cannot say.

    Use it as ``Annotated[int, Port(min=0, max=10)]`` or ``@node(inputs={"x": Port(...)})``.
    ``validator`` returns ``True``/``None`` for a good value, and ``False`` or a message
    for a bad one.
    """

    type: str | None = None
    description: str = ""
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    validator: Callable[[Any], bool | str | None] | None = None
    default: Any = MISSING
    cacheable: bool = True
    broadcast: bool = False


@dataclass(frozen=True)
class InputPort:
    """A resolved input port. It is required when it has no default."""

    name: str
    type: str = ANY
    default: Any = MISSING
    nullable: bool = False
    description: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    validator: Callable[[Any], bool | str | None] | None = field(default=None, compare=False)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def has_constraints(self) -> bool:
        return (
            self.min is not None
            or self.max is not None
            or self.choices is not None
            or self.validator is not None
        )

    def check_literal(self, value: Any) -> str | None:
        """Why ``value`` cannot be given to this port in a document, or ``None``."""
        if value is None and (self.nullable or self.default is None):
            return None
        problem = check_value(self.type, value)
        return problem if problem is not None else self.check(value)

    def check(self, value: Any) -> str | None:
        """Why ``value`` breaks this port's min/max/choices/validator, or ``None``."""
        if not self.has_constraints or value is None:
            return None
        shown = summarize_value(value)
        if self.choices is not None and value not in self.choices:
            return f"must be one of {bounded_repr(list(self.choices), 200)}, got {shown}"
        if self.min is not None or self.max is not None:
            try:
                if self.min is not None and value < self.min:
                    return f"must be >= {self.min:g}, got {shown}"
                if self.max is not None and value > self.max:
                    return f"must be <= {self.max:g}, got {shown}"
            except TypeError:
                return f"must be a number between {self.min} and {self.max}, got {shown}"
        if self.validator is not None:
            name = getattr(self.validator, "__name__", "")
            try:
                verdict = self.validator(value)
            except Exception as exc:
                reason = summarize_value(str(exc), 200)
                return f"rejected by validator {name} ({type(exc).__name__}: {reason}): {shown}"
            if verdict is False:
                return f"rejected by validator {name}: {shown}"
            if isinstance(verdict, str):
                return f"{verdict}: {shown}"
        return None

    def merged(self, port: Port) -> InputPort:
        """This spec with the facts ``port`` states."""
        changes: dict[str, Any] = {}
        for name in ("description", "min", "max", "validator", "type"):
            value = getattr(port, name)
            if value is not None and value != "":
                changes[name] = value
        if port.choices is not None:
            changes["choices"] = tuple(port.choices)
        if port.default is not MISSING:
            changes["default"] = port.default
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            spec["default"] = self.default
        for name in ("min", "max", "choices", "description"):
            value = getattr(self, name)
            if value not in (None, ""):
                spec[name] = list(value) if name == "choices" else value
        return spec


@dataclass(frozen=True)
class OutputPort:
    """A resolved output port.

    ``cacheable=False`` keeps the value out of shared caches (for handles such as open
    models); ``broadcast=True`` marks a value that many consumers on many workers read.
    """

    name: str
    type: str = ANY
    description: str = ""
    cacheable: bool = True
    broadcast: bool = False

    def describe(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description:
            spec["description"] = self.description
        if not self.cacheable:
            spec["cacheable"] = False
        if self.broadcast:
            spec["broadcast"] = True
        return spec
