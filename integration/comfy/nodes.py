"""ComfyUI node classes as nodegraph node types, and how one is called.

    >>> class Double:
    ...     @classmethod
    ...     def INPUT_TYPES(cls):
    ...         return {"required": {"value": ("INT", {"default": 1})}}
    ...     RETURN_TYPES = ("INT",)
    ...     FUNCTION = "run"
    ...     def run(self, value):
    ...         return (value * 2,)
    >>> double = ComfyNodeType.wrap("Double", Double)
    >>> call_node(double, "1", {"value": [1, 2, 3]}).outputs
    [[2, 4, 6]]

A pack folder that exports ``NODE_CLASS_MAPPINGS`` (as in ComfyUI's ``custom_nodes/``)
loads into the registry like any pack; each class becomes a ``ComfyNodeType`` whose
ports are its inputs and its outputs ``out0``, ``out1``, ... in ``RETURN_TYPES`` order.

``call_node`` runs a node with ComfyUI's semantics. Every input arrives as a list; the
node is called once per item (shorter lists repeat their last item) unless it sets
``INPUT_IS_LIST``; outputs are merged back into one list per output, flattened where
``OUTPUT_IS_LIST`` says so. An ``ExecutionBlocker`` among the inputs of a call makes
that call's outputs blockers too. A result ``{"result": ..., "expand": graph}`` asks
the executor to add ``graph`` to the run.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from integration.comfy import dynamic
from integration.comfy.runtime import ExecutionBlocker, GraphBuilder, install_shims
from integration.comfy.signatures import InputSpec, Signature
from integration.comfy.v3 import V3Calls, install_v3_shims, is_v3_class, run_coroutine
from integration.errors import NodegraphError, NodeOutputError
from integration.graph.context import ExecutionContext
from integration.graph.nodetype import NodeType
from integration.graph.ports import MISSING, InputPort, OutputPort

_SOCKET_FAMILIES = (dynamic.AUTOGROW, dynamic.DYNAMIC_SLOT)
"""Dynamic inputs that are not ports themselves: their dotted members are."""

_PORT_TYPES = {"INT": "int", "FLOAT": "float", "STRING": "str", "BOOLEAN": "bool"}


def output_port(slot: int) -> str:
    """The nodegraph port name of a ComfyUI output slot."""
    return f"out{slot}"


def output_slot(port: str) -> int | None:
    """The slot of an ``outN`` port name, or ``None``."""
    if port.startswith("out") and port[3:].isdigit():
        return int(port[3:])
    return None


class ComfyNodeError(NodegraphError):
    """A ComfyUI node class broke its own contract (no FUNCTION, a bad return)."""


class ComfyNodeType(NodeType):
    """A ComfyUI node class: V1 (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ...)
    or V3 (``define_schema`` and ``execute``, from ``comfy_api.latest``)."""

    comfy_class: Any
    signature: Signature
    v3: V3Calls | None = None

    @classmethod
    def wrap(cls, class_type: str, node_class: Any, display_name: str = "") -> ComfyNodeType:
        v3 = None
        if is_v3_class(node_class):
            try:
                v3 = V3Calls(node_class)
            except Exception as exc:
                raise ComfyNodeError(f"node class {class_type!r}: its schema: {exc}") from exc
            display_name = display_name or v3.schema.display_name or ""
            function: Any = node_class.execute
        else:
            function_name = getattr(node_class, "FUNCTION", None)
            if not isinstance(function_name, str) or not callable(
                getattr(node_class, function_name, None)
            ):
                raise ComfyNodeError(
                    f"node class {class_type!r} must set FUNCTION to the name of one of its "
                    f"methods, got {function_name!r}"
                )
            function = getattr(node_class, function_name)
        signature = Signature.from_class(class_type, node_class)
        inputs = {
            spec.name: _input_port(spec)
            for spec in signature.visible_inputs()
            if spec.name.isidentifier() and spec.type not in _SOCKET_FAMILIES
        }
        outputs = {
            output_port(slot): OutputPort(
                output_port(slot), return_type, description=signature.return_names[slot]
            )
            for slot, return_type in enumerate(signature.return_types)
        }
        mode = "none" if not outputs else "multiple"
        node_type = cls(
            function,
            name=class_type,
            inputs=inputs,
            outputs=outputs,
            output_mode=mode,
            description=display_name or (inspect.getdoc(node_class) or "").partition("\n")[0],
            version=_class_version(node_class),
            category=signature.category,
        )
        node_type.comfy_class = node_class
        node_type.v3 = v3
        node_type.signature = signature if not display_name else _named(signature, display_name)
        return node_type

    @property
    def function_name(self) -> str:
        return "execute" if self.v3 is not None else self.comfy_class.FUNCTION

    @property
    def not_idempotent(self) -> bool:
        return bool(getattr(self.comfy_class, "NOT_IDEMPOTENT", False))

    def calls(self, instance: bool = True) -> Any:
        """What the executor calls a node's methods on, by their V1 names (the function,
        ``check_lazy_status``, ``IS_CHANGED``, ``VALIDATE_INPUTS``): for V1 a new
        instance (``instance``) or the class; for V3 its ``V3Calls``."""
        if self.v3 is not None:
            return self.v3
        return self.comfy_class() if instance else self.comfy_class

    def defines(self, method: str) -> bool:
        """Whether the class has the method of this V1 name (V3: its counterpart)."""
        if self.v3 is not None:
            return self.v3.defines(_V3_METHODS.get(method, method))
        return callable(getattr(self.comfy_class, method, None))

    def validator(self) -> Any:
        """The function whose parameters say which inputs ``VALIDATE_INPUTS`` checks."""
        if self.v3 is not None:
            return self.v3.validator()
        return self.comfy_class.VALIDATE_INPUTS

    def invoke(
        self, values: Mapping[str, Any], context: ExecutionContext | None = None
    ) -> dict[str, Any]:
        """One call with plain values, for use as a node of a nodegraph graph."""
        outcome = call_node(self, "", {k: [v] for k, v in values.items()})
        if outcome.expansions is not None:
            raise ComfyNodeError(
                f"node class {self.name!r} expands into a graph; run it in a ComfyUI "
                "workflow, where expansion is supported"
            )
        return {
            output_port(slot): values[0] if len(values) == 1 else values
            for slot, values in enumerate(outcome.outputs)
        }

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        signature = self.signature
        described["comfy"] = {
            "class_type": signature.class_type,
            "inputs": {
                category: [s.describe() for s in signature.inputs if s.category == category]
                for category in ("required", "optional", "hidden")
            },
            "return_types": list(signature.return_types),
            "return_names": list(signature.return_names),
            "output_node": signature.output_node,
        }
        return described


_V3_METHODS = {"IS_CHANGED": "fingerprint_inputs", "VALIDATE_INPUTS": "validate_inputs"}


def _named(signature: Signature, display_name: str) -> Signature:
    return replace(signature, display_name=display_name)


def _input_port(spec: InputSpec) -> InputPort:
    options = spec.options
    minimum, maximum = options.get("min"), options.get("max")
    return InputPort(
        name=spec.name,
        type=_PORT_TYPES.get(spec.type, spec.type if spec.type != "COMBO" else "any"),
        default=spec.default if spec.has_default or spec.category == "optional" else MISSING,
        nullable=spec.category == "optional" or spec.lazy,
        description=str(options.get("tooltip", "")),
        min=minimum if isinstance(minimum, int | float) else None,
        max=maximum if isinstance(maximum, int | float) else None,
        choices=spec.choices,
    )


def _class_version(node_class: Any) -> str:
    """A hash of the class's source, so editing a node invalidates its cache entries."""
    try:
        text = inspect.getsource(node_class).encode()
    except (OSError, TypeError):
        text = repr(sorted(vars(node_class))).encode()
    return hashlib.sha256(text).hexdigest()[:16]


# -- calling a node -----------------------------------------------------------------


@dataclass
class NodeOutcome:
    """What one execution of a node produced.

    ``outputs`` holds one list per output slot. ``expansions`` is set instead when the
    node expanded: one ``(graph or None, result)`` per call. ``blocked`` holds the
    messages of blockers that stopped calls.
    """

    outputs: list[list[Any]] = field(default_factory=list)
    ui: dict[str, list[Any]] = field(default_factory=dict)
    expansions: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] | None = None
    blocked: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def map_over_list(
    target: Any,
    inputs: Mapping[str, list[Any]],
    function: str,
    input_is_list: bool = False,
    before_call: Callable[[int], None] | None = None,
    on_block: Callable[[ExecutionBlocker], Any] | None = None,
) -> list[Any]:
    """Call ``target.<function>`` over input lists, as ComfyUI does.

    With ``input_is_list`` the function gets the whole lists in one call; otherwise it
    is called once per index of the longest list, and shorter lists reuse their last
    item. A call whose inputs hold an ``ExecutionBlocker`` is not made: the blocker (or
    what ``on_block`` makes of it) stands for its result.
    """
    method = getattr(target, function)
    results: list[Any] = []

    def call(arguments: dict[str, Any], index: int | None) -> None:
        blocker = None
        for value in arguments.values():
            candidates = value if input_is_list and isinstance(value, list) else (value,)
            blocker = next((v for v in candidates if isinstance(v, ExecutionBlocker)), None)
            if blocker is not None:
                break
        if blocker is not None:
            results.append(on_block(blocker) if on_block else blocker)
            return
        if before_call is not None and index is not None:
            before_call(index)
        results.append(method(**arguments))

    if input_is_list:
        call(dict(inputs), 0)
    elif not inputs:
        call({}, None)
    else:
        longest = max(len(values) for values in inputs.values())
        for index in range(longest):
            call(
                {
                    name: values[min(index, len(values) - 1)] if values else None
                    for name, values in inputs.items()
                },
                index,
            )
    return results


def merge_results(
    results: list[tuple[Any, ...]], output_is_list: tuple[bool, ...]
) -> list[list[Any]]:
    """Per-call result tuples -> one list per output slot (``OUTPUT_IS_LIST`` flattens)."""
    if not results:
        return []
    merged: list[list[Any]] = []
    for slot in range(len(results[0])):
        flatten = slot < len(output_is_list) and output_is_list[slot]
        column: list[Any] = []
        for result in results:
            value = result[slot]
            if flatten and not isinstance(value, ExecutionBlocker):
                column.extend(value)
            else:
                column.append(value)
        merged.append(column)
    return merged


def call_node(
    node_type: ComfyNodeType,
    node_id: str,
    inputs: Mapping[str, list[Any]],
) -> NodeOutcome:
    """Run one node over its input lists and collect outputs, UI values or expansions."""
    signature = node_type.signature
    instance = node_type.calls()
    blocked: list[str] = []

    def on_block(blocker: ExecutionBlocker) -> ExecutionBlocker:
        if blocker.message is not None:
            blocked.append(blocker.message)
            return ExecutionBlocker(None)
        return blocker

    def before_call(call_index: int) -> None:
        GraphBuilder.set_default_prefix(node_id, call_index, 0)

    started = time.perf_counter()
    returned = map_over_list(
        instance,
        inputs,
        node_type.function_name,
        signature.input_is_list,
        before_call,
        on_block,
    )
    width = len(signature.return_types)
    results: list[tuple[Any, ...]] = []
    uis: list[dict[str, Any]] = []
    expansions: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] = []
    expanded = False
    for value in returned:
        if isinstance(value, dict):
            if "ui" in value:
                uis.append(value["ui"])
            result = _as_tuple(node_type, value.get("result", ()), width)
            if "expand" in value:
                expanded = True
                expansions.append((value["expand"], result))
            elif "result" in value or width == 0:
                results.append(result)
                expansions.append((None, result))
        else:
            result = _as_tuple(node_type, value, width)
            results.append(result)
            expansions.append((None, result))
    outcome = NodeOutcome(blocked=blocked)
    if expanded:
        outcome.expansions = expansions
    else:
        outcome.outputs = merge_results(results, signature.output_is_list)
    if uis:
        outcome.ui = {k: [item for ui in uis for item in ui.get(k, [])] for k in uis[0]}
    outcome.duration_s = time.perf_counter() - started
    return outcome


def _as_tuple(node_type: ComfyNodeType, value: Any, width: int) -> tuple[Any, ...]:
    if isinstance(value, ExecutionBlocker):
        return (value,) * width
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple):
        raise NodeOutputError(
            f"node class {node_type.name!r} must return a tuple of {width} value(s) or a "
            f"dict with 'result'/'ui'/'expand', not {type(value).__name__}"
        )
    if len(value) != width and (value or width):
        raise NodeOutputError(
            f"node class {node_type.name!r} returned {len(value)} value(s) but "
            f"RETURN_TYPES declares {width}"
        )
    return value


def is_changed_nan(value: Any) -> bool:
    """Whether an ``IS_CHANGED`` result contains NaN, which means "always run"."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list | tuple):
        return any(is_changed_nan(v) for v in value)
    return False


def wrap_mappings(
    mappings: Mapping[str, Any], display_names: Mapping[str, str] | None = None
) -> list[ComfyNodeType]:
    """Every class of a pack's ``NODE_CLASS_MAPPINGS`` as a node type."""
    display_names = display_names or {}
    return [
        ComfyNodeType.wrap(class_type, node_class, display_names.get(class_type, ""))
        for class_type, node_class in mappings.items()
    ]


def pack_node_types(module: types.ModuleType) -> list[NodeType] | None:
    """The node types of a ComfyUI pack module, or ``None`` for another module: the
    pack loader through which the registry loads ComfyUI packs.

    As in ComfyUI, a module exporting ``NODE_CLASS_MAPPINGS`` (V1 classes, or V3 ones
    listed there) is read from it; otherwise its ``comfy_entrypoint()`` (sync or async)
    gives a ``ComfyExtension``, whose ``on_load()`` is awaited and whose
    ``get_node_list()`` lists V3 classes, each registered under its schema's node id.
    """
    classes = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if classes is not None:
        if not isinstance(classes, dict):
            raise ComfyNodeError("NODE_CLASS_MAPPINGS must be a dict")
        return list(wrap_mappings(classes, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None)))
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if entrypoint is None:
        return None
    if not callable(entrypoint):
        raise ComfyNodeError("comfy_entrypoint must be a function returning a ComfyExtension")
    return [
        ComfyNodeType.wrap(node_class.GET_SCHEMA().node_id, node_class)
        for node_class in _extension_classes(entrypoint)
    ]


def _extension_classes(entrypoint: Callable[[], Any]) -> list[Any]:
    async def load() -> list[Any]:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        for method in ("on_load", "get_node_list"):
            if not callable(getattr(extension, method, None)):
                raise ComfyNodeError(
                    f"comfy_entrypoint() must return a ComfyExtension, got "
                    f"{type(extension).__name__} (it has no {method}())"
                )
        loaded = extension.on_load()
        if inspect.isawaitable(loaded):
            await loaded
        listed = extension.get_node_list()
        if inspect.isawaitable(listed):
            listed = await listed
        return listed

    try:
        listed = run_coroutine(load())
    except ComfyNodeError:
        raise
    except Exception as exc:
        raise ComfyNodeError(f"comfy_entrypoint() failed: {exc!r}") from exc
    if not isinstance(listed, list):
        raise ComfyNodeError(
            f"get_node_list() must return a list of node classes, got {type(listed).__name__}"
        )
    for node_class in listed:
        if not is_v3_class(node_class):
            raise ComfyNodeError(
                f"get_node_list() listed {node_class!r}, which is not a V3 node class "
                "(a subclass of comfy_api.latest.io.ComfyNode)"
            )
    return listed


def install_pack_shims() -> None:
    """Make what ComfyUI packs import from ComfyUI importable (V1's and V3's modules)."""
    install_shims()
    install_v3_shims()
