"""Node types: a plain function plus the port specs read from its signature.

>>> from typing import NamedTuple
>>> from integration.graph import node
>>> class DivMod(NamedTuple):
...     quotient: int
...     remainder: int
>>> @node
... def divmod_(a: int, b: int = 1) -> DivMod:
...     '''Integer division with remainder.'''
...     return DivMod(*divmod(a, b))
>>> sorted(divmod_.outputs), divmod_.inputs["b"].required
(['quotient', 'remainder'], False)
>>> divmod_.invoke({"a": 7, "b": 2})
{'quotient': 3, 'remainder': 1}
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

from integration.errors import NodeOutputError
from integration.graph.context import ExecutionContext
from integration.graph.policy import ErrorPolicy
from integration.graph.ports import MISSING, InputPort, OutputPort, Port
from integration.graph.types import ANY, check_value, type_name
from integration.resources.requirements import ResourceRequirement

DEFAULT_OUTPUT = "out"

OutputMode = Literal["none", "single", "multiple"]
Cost = Literal["cheap", "expensive"]
"""What a node type says of its own cost: ``cheap`` nodes may be fused into one task
with their neighbours; ``expensive`` ones always keep a task of their own."""
OutputsSpec = Mapping[str, Any] | list[str] | list[OutputPort]


class NodeType:
    """A registered kind of node. Call it like the function it wraps.

    ``name`` is the short name; once a registry loads the type from a pack, ``pack`` is
    set and ``qualified_name`` (``core.add``) is how graphs refer to it.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        inputs: dict[str, InputPort],
        outputs: dict[str, OutputPort],
        output_mode: OutputMode,
        description: str = "",
        version: str = "",
        context_param: str | None = None,
        cacheable: bool = True,
        category: str = "",
        fingerprint: Callable[..., Any] | None = None,
        on_error: ErrorPolicy | Mapping[str, Any] | None = None,
        resources: ResourceRequirement | Mapping[str, Any] | None = None,
        cost: Cost | None = None,
        batch: Callable[..., Any] | None = None,
        max_batch: int = 64,
    ) -> None:
        if cost not in (None, "cheap", "expensive"):
            raise ValueError(f"node type {name!r}: cost is 'cheap' or 'expensive', not {cost!r}")
        if max_batch < 1:
            raise ValueError(f"node type {name!r}: max_batch must be at least 1, not {max_batch}")
        self.fn = fn
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.output_mode: OutputMode = output_mode
        self.description = description
        self.version = version or source_hash(fn)
        self.context_param = context_param
        self.cacheable = cacheable
        self.category = category
        self.fingerprint = fingerprint
        self.on_error = ErrorPolicy.model_validate(on_error) if on_error is not None else None
        self.resources = (
            ResourceRequirement.model_validate(resources) if resources is not None else None
        )
        self.cost: Cost | None = cost
        # Batchable types: ``batch(list of input sets) -> list of results``, one
        # result per set, each shaped like ``fn``'s return value.
        self.batch = batch
        self.max_batch = max_batch
        self.pack: str | None = None
        self.pack_source: Any = None  # a registry.PackSource once loaded from a pack
        self._checked_inputs = tuple(p for p in inputs.values() if p.has_constraints)

    @property
    def qualified_name(self) -> str:
        return f"{self.pack}.{self.name}" if self.pack else self.name

    def __repr__(self) -> str:
        return f"<NodeType {self.qualified_name} v{self.version[:8]}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # A type loaded from a pack travels by reference, so a worker process loads the
        # pack itself instead of unpickling a function that may not be importable there.
        if self.pack_source is not None:
            return (self.pack_source.resolve_node_type, (self.qualified_name,))
        return (_rebuild_node_type, (self.__dict__.copy(), type(self)))

    def check_inputs(self, values: Mapping[str, Any]) -> list[str]:
        """Constraint violations of the given input values, as messages."""
        problems = []
        for port in self._checked_inputs:
            if port.name in values:
                problem = port.check(values[port.name])
                if problem is not None:
                    problems.append(f"input {port.name!r} {problem}")
        return problems

    def check_outputs(self, values: Mapping[str, Any]) -> list[str]:
        """Values that do not match their output port's declared type, as messages."""
        problems = []
        for name, port in self.outputs.items():
            value = values.get(name)
            if value is None:
                continue
            problem = check_value(port.type, value)
            if problem is not None:
                problems.append(f"output {name!r} {problem}")
        return problems

    def invoke(
        self, values: Mapping[str, Any], context: ExecutionContext | None = None
    ) -> dict[str, Any]:
        """Run the function on port values and return ``{output port: value}``."""
        if self.context_param is not None:
            values = {**values, self.context_param: context}
        return self.split_outputs(self.fn(**values))

    def split_outputs(self, result: Any) -> dict[str, Any]:
        """Normalise a function's return value into ``{output port: value}``."""
        if self.output_mode == "single":
            return {next(iter(self.outputs)): result}
        if self.output_mode == "none":
            return {}
        names = self.outputs.keys()
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            if missing:
                raise NodeOutputError(
                    f"node type {self.qualified_name!r} returned no value for "
                    f"output(s) {missing}; it returned keys {sorted(result)}"
                )
            return {n: result[n] for n in names}
        if isinstance(result, tuple | list) and len(result) == len(names):
            return dict(zip(names, result, strict=True))
        raise NodeOutputError(
            f"node type {self.qualified_name!r} declares outputs {list(names)} and must "
            f"return a mapping or a {len(names)}-tuple, not {type(result).__name__}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.qualified_name,
            "description": self.description,
            "version": self.version,
            "inputs": [p.describe() for p in self.inputs.values()],
            "outputs": [p.describe() for p in self.outputs.values()],
        }


def _rebuild_node_type(state: dict[str, Any], cls: type[NodeType] | None = None) -> NodeType:
    instance = NodeType.__new__(cls or NodeType)
    instance.__dict__.update(state)
    return instance


def source_hash(fn: Callable[..., Any]) -> str:
    """A short hash of a function's source, so that editing a node changes its version."""
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_consts) if code else fn).encode()
    return hashlib.sha256(text).hexdigest()[:16]


@overload
def node(fn: Callable[..., Any], /) -> NodeType: ...


@overload
def node(
    *,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    inputs: Mapping[str, Port] | None = None,
    outputs: OutputsSpec | None = None,
    cacheable: bool = True,
    category: str = "",
    fingerprint: Callable[..., Any] | None = None,
    on_error: ErrorPolicy | Mapping[str, Any] | None = None,
    resources: ResourceRequirement | Mapping[str, Any] | None = None,
    cost: Cost | None = None,
    batch: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> Callable[[Callable[..., Any]], NodeType]: ...


def node(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    inputs: Mapping[str, Port] | None = None,
    outputs: OutputsSpec | None = None,
    cacheable: bool = True,
    category: str = "",
    fingerprint: Callable[..., Any] | None = None,
    on_error: ErrorPolicy | Mapping[str, Any] | None = None,
    resources: ResourceRequirement | Mapping[str, Any] | None = None,
    cost: Cost | None = None,
    batch: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> NodeType | Callable[[Callable[..., Any]], NodeType]:
    """Turn a plain function into a ``NodeType``.

    Input ports come from the parameters (a default makes a port optional; annotate
    with ``Annotated[T, Port(...)]`` or pass ``inputs=`` for min/max/choices/validators).
    Output ports come from the return annotation: one value is the port ``out``; a
    ``NamedTuple`` or ``TypedDict`` gives one port per field; ``-> None`` gives none.
    ``outputs=`` overrides the annotation. The description defaults to the docstring's
    first line, and the version to a hash of the source.

    ``cacheable=False`` gives the node a cache key scoped to its run. ``fingerprint``
    (ComfyUI's ``IS_CHANGED``) is called with the node's literal inputs before a run;
    its value joins the cache key, and NaN means "never cached". ``on_error`` is the
    type's default error policy (``{"retry": {"attempts": 3}}``); a node overrides it.
    ``resources`` is what one running instance holds (``{"gpu_count": 1}``), used for
    placement on Dask and for the local resource pool; a node overrides it too.

    ``cost="cheap"`` lets the planner fuse the node with its neighbours into one
    Prefect task (``execution.fusion``); ``cost="expensive"`` never fuses it. Without
    it, the node's recorded median duration decides. ``batch`` makes the type
    batchable: a function over a list of input sets (each a ``{port: value}`` mapping)
    that returns one result per set, shaped like ``fn``'s. Ready nodes of the type with
    the same params then run as one call of up to ``max_batch`` sets.
    """

    def decorate(function: Callable[..., Any]) -> NodeType:
        return _build_node_type(
            function,
            name=name,
            description=description,
            version=version,
            input_overrides=dict(inputs or {}),
            outputs=outputs,
            cacheable=cacheable,
            category=category,
            fingerprint=fingerprint,
            on_error=on_error,
            resources=resources,
            cost=cost,
            batch=batch,
            max_batch=max_batch,
        )

    return decorate(fn) if fn is not None else decorate


def _build_node_type(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    version: str | None,
    input_overrides: dict[str, Port],
    outputs: OutputsSpec | None,
    cacheable: bool,
    category: str,
    fingerprint: Callable[..., Any] | None = None,
    on_error: ErrorPolicy | Mapping[str, Any] | None = None,
    resources: ResourceRequirement | Mapping[str, Any] | None = None,
    cost: Cost | None = None,
    batch: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> NodeType:
    where = f"node function {fn.__module__}.{fn.__qualname__}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise TypeError(f"{where}: cannot resolve its annotations ({exc})") from exc
    signature = inspect.signature(fn)

    ports: dict[str, InputPort] = {}
    context_param = None
    for param in signature.parameters.values():
        annotation = hints.get(param.name, Any)
        if _strip_annotated(annotation) is ExecutionContext:
            context_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"{where}: parameter {param.name!r} is {param.kind.description}; node ports "
                "must be named parameters that can be passed by keyword"
            )
        type_, nullable = type_name(annotation)
        port = InputPort(
            name=param.name,
            type=type_,
            nullable=nullable,
            default=MISSING if param.default is param.empty else param.default,
        )
        literal_values = _literal_values(annotation)
        if literal_values is not None:
            port = port.merged(Port(choices=literal_values))
        for marker in _port_markers(annotation):
            port = port.merged(marker)
        if param.name in input_overrides:
            port = port.merged(input_overrides.pop(param.name))
        ports[param.name] = port
    if input_overrides:
        raise TypeError(
            f"{where}: inputs= names {sorted(input_overrides)}, which are not parameters"
        )

    output_ports, mode = _output_ports(where, hints.get("return", MISSING), outputs)
    doc = inspect.getdoc(fn) or ""
    return NodeType(
        fn,
        name=name or fn.__name__.rstrip("_"),
        inputs=ports,
        outputs=output_ports,
        output_mode=mode,
        description=description if description is not None else doc.partition("\n")[0],
        version=version or "",
        context_param=context_param,
        cacheable=cacheable,
        category=category,
        fingerprint=fingerprint,
        on_error=on_error,
        resources=resources,
        cost=cost,
        batch=batch,
        max_batch=max_batch,
    )


def _strip_annotated(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    bare = _strip_annotated(annotation)
    if typing.get_origin(bare) is typing.Literal:
        return typing.get_args(bare)
    return None


def _port_markers(annotation: Any) -> list[Port]:
    if typing.get_origin(annotation) is typing.Annotated:
        return [m for m in annotation.__metadata__ if isinstance(m, Port)]
    return []


def _output_port(name: str, annotation: Any) -> OutputPort:
    port = OutputPort(name=name, type=type_name(annotation)[0])
    for marker in _port_markers(annotation):
        port = OutputPort(
            name=name,
            type=marker.type or port.type,
            description=marker.description,
            cacheable=marker.cacheable,
            broadcast=marker.broadcast,
        )
    return port


def _output_ports(
    where: str, annotation: Any, explicit: OutputsSpec | None
) -> tuple[dict[str, OutputPort], OutputMode]:
    if explicit is not None:
        ports: list[OutputPort] = []
        items = explicit.items() if isinstance(explicit, Mapping) else explicit
        for item in items:
            if isinstance(item, OutputPort):
                ports.append(item)
            elif isinstance(item, str):
                ports.append(OutputPort(name=item))
            else:
                port_name, port_type = item
                ports.append(_output_port(port_name, port_type))
        if not ports:
            return {}, "none"
        return {p.name: p for p in ports}, "single" if len(ports) == 1 else "multiple"

    if annotation is MISSING:
        return {DEFAULT_OUTPUT: OutputPort(DEFAULT_OUTPUT, ANY)}, "single"
    if annotation is None or annotation is type(None):
        return {}, "none"
    bare = _strip_annotated(annotation)
    if isinstance(bare, type) and issubclass(bare, tuple) and hasattr(bare, "_fields"):
        field_hints = typing.get_type_hints(bare, include_extras=True)
        fields = {f: _output_port(f, field_hints.get(f, Any)) for f in bare._fields}
        return fields, "multiple"
    if typing.is_typeddict(bare):
        field_hints = typing.get_type_hints(bare, include_extras=True)
        return {k: _output_port(k, v) for k, v in field_hints.items()}, "multiple"
    if bare is tuple or typing.get_origin(bare) is tuple:
        raise TypeError(
            f"{where}: a plain tuple return type does not name its outputs; return a "
            "NamedTuple or TypedDict, or pass outputs=[...]"
        )
    return {DEFAULT_OUTPUT: _output_port(DEFAULT_OUTPUT, annotation)}, "single"
