"""What ComfyUI node packs import from ComfyUI itself, for packs run without ComfyUI.

    >>> builder = GraphBuilder(prefix="7.0.0.")
    >>> add = builder.node("IntAdd", a=1, b=2)
    >>> add.out(0), builder.finalize()["7.0.0.1"]["class_type"]
    (['7.0.0.1', 0], 'IntAdd')

Packs import ``ExecutionBlocker`` from ``comfy_execution.graph``, ``GraphBuilder`` and
``is_link`` from ``comfy_execution.graph_utils``, and ``ProgressBar`` from
``comfy.utils``. ``install_shims`` makes those module names resolve to this module
when no ComfyUI is importable, so a pack written for ComfyUI loads unchanged. The
behaviour follows ComfyUI's: a builder's default id prefix is ``"<node id>.<call
index>.<graph index>."``, set before each call of the expanding node; here it is kept
per thread, because nodegraph runs nodes side by side. A ``ProgressBar`` reports to the
running node's context: the run's progress, and preview frames in ``comfy serve``.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from integration.graph.context import current_context


class ExecutionBlocker:
    """Returned in place of a value, it stops every node that receives it from running.

    With a ``message`` the blocked consumer is reported as failed with that message;
    without one the branch is silently not executed (ComfyUI's semantics).
    """

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExecutionBlocker, (self.message,))


def is_link(value: Any) -> bool:
    """Whether an API-format input value is a link ``[node_id, slot]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


class _PrefixState(threading.local):
    root = ""
    call_index = 0
    graph_index = 0


_prefix = _PrefixState()


class Node:
    """One node being built by a ``GraphBuilder``."""

    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        serialized: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            serialized["override_display_id"] = self.override_display_id
        return serialized


class GraphBuilder:
    """Builds the graph a node expands into (``{"result": ..., "expand": ...}``)."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = GraphBuilder.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _prefix.root, _prefix.call_index, _prefix.graph_index = (
            prefix_root,
            call_index,
            graph_index,
        )

    @classmethod
    def alloc_prefix(
        cls, root: str | None = None, call_index: int | None = None, graph_index: int | None = None
    ) -> str:
        root = _prefix.root if root is None else root
        call_index = _prefix.call_index if call_index is None else call_index
        graph_index = _prefix.graph_index if graph_index is None else graph_index
        _prefix.graph_index += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        id = self.prefix + id
        if id in self.nodes:
            return self.nodes[id]
        built = Node(id, class_type, kwargs)
        self.nodes[id] = built
        return built

    def lookup_node(self, id: str) -> Node | None:
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        node_id = self.prefix + node_id
        to_remove = []
        for node in self.nodes.values():
            for key, value in node.inputs.items():
                if is_link(value) and value[0] == node_id and value[1] == index:
                    if new_value is None:
                        to_remove.append((node, key))
                    else:
                        node.inputs[key] = new_value
        for node, key in to_remove:
            del node.inputs[key]

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + id, None)


def add_graph_prefix(
    graph: dict[str, Any], outputs: Iterable[Any], prefix: str
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """``graph`` and its ``outputs`` with every node id prefixed."""
    new_graph = {}
    for node_id, node_info in graph.items():
        new_inputs = {}
        for key, value in node_info.get("inputs", {}).items():
            new_inputs[key] = [prefix + value[0], value[1]] if is_link(value) else value
        new_graph[prefix + node_id] = {**copy.copy(node_info), "inputs": new_inputs}
    new_outputs = tuple([prefix + o[0], o[1]] if is_link(o) else o for o in outputs)
    return new_graph, new_outputs


class DynamicPrompt:
    """The prompt being run, plus the nodes that expansion added during the run.

    Nodes with a ``DYNPROMPT`` hidden input receive it (a copy, when they run in
    another process) and read the graph through it, as ComfyUI's loop nodes do.
    """

    def __init__(self, original_prompt: dict[str, Any]) -> None:
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Any] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        if node_id in self.ephemeral_prompt:
            return self.ephemeral_prompt[node_id]
        if node_id in self.original_prompt:
            return self.original_prompt[node_id]
        raise KeyError(f"node {node_id!r} is not in the prompt")

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral_prompt

    def add_ephemeral_node(
        self, node_id: str, node_info: dict[str, Any], parent_id: str, display_id: str
    ) -> None:
        self.ephemeral_prompt[node_id] = node_info
        self.ephemeral_parents[node_id] = parent_id
        self.ephemeral_display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_parents:
            node_id = self.ephemeral_parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_display:
            node_id = self.ephemeral_display[node_id]
        return node_id

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> dict[str, Any]:
        return self.original_prompt


class ComfyNodeABC:
    """ComfyUI's optional base class for V1 nodes (``comfy.comfy_types``)."""


class _IOType(str):
    pass


class _AnyType(str):
    """ComfyUI's ``*`` type, which compares equal to every type."""

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class IO:
    """The type names of ``comfy.comfy_types.IO``."""

    ANY = _AnyType("*")
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    STRING = "STRING"
    COMBO = "COMBO"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    CONDITIONING = "CONDITIONING"
    MODEL = "MODEL"
    CLIP = "CLIP"
    VAE = "VAE"


# -- comfy.utils: progress bars ----------------------------------------------------

ProgressBarHook = Callable[..., None]
"""ComfyUI's global progress hook: ``hook(value, total, preview, node_id=None)``."""


def report_progress(
    value: float, total: float | None, preview: Any = None, node_id: str | None = None
) -> None:
    """The default hook: a pack's ``ProgressBar`` reports to the running node's context
    (the run's progress and, for a preview, the ComfyUI server's preview frames)."""
    context = current_context()
    if context is None:
        return
    context.progress(value, total)
    if preview is not None:
        image, image_format = preview_bytes(preview)
        context.preview(image, image_format)


def preview_bytes(preview: Any) -> tuple[bytes, str]:
    """ComfyUI's preview, ``(format, image, max_size)`` with a PIL image, or encoded
    bytes; as ``(encoded bytes, "PNG" | "JPEG")``."""
    if isinstance(preview, bytes | bytearray):
        return bytes(preview), "JPEG" if bytes(preview[:2]) == b"\xff\xd8" else "PNG"
    if not isinstance(preview, tuple | list) or len(preview) < 2:
        raise TypeError(
            f"a ProgressBar preview must be (format, image, max_size), not {type(preview).__name__}"
        )
    image_format, image = str(preview[0]).upper(), preview[1]
    if isinstance(image, bytes | bytearray):
        return bytes(image), image_format
    max_size = preview[2] if len(preview) > 2 else None
    if max_size and hasattr(image, "thumbnail"):
        image = image.copy()
        image.thumbnail((max_size, max_size))
    encoded = io.BytesIO()
    image.save(encoded, format=image_format)  # a PIL image, as ComfyUI sends
    return encoded.getvalue(), image_format


PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK: ProgressBarHook | None = report_progress


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: ProgressBarHook | None) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


def _progress_setting(name: str) -> Any:
    # comfy.utils.PROGRESS_BAR_HOOK and _ENABLED read the current values, as in ComfyUI.
    if name in ("PROGRESS_BAR_HOOK", "PROGRESS_BAR_ENABLED"):
        return globals()[name]
    raise AttributeError(f"module 'comfy.utils' (nodegraph's stand-in) has no {name!r}")


class ProgressBar:
    """``comfy.utils.ProgressBar``: ``update(1)`` per step, ``update_absolute(v, total,
    preview)``; each update reaches the global hook, as in ComfyUI."""

    def __init__(self, total: float, node_id: str | None = None) -> None:
        self.total = total
        self.current: float = 0
        self.node_id = node_id
        self.hook = PROGRESS_BAR_HOOK

    def update_absolute(
        self, value: float, total: float | None = None, preview: Any = None
    ) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


_installed = False
_install_lock = threading.Lock()


def install_shims() -> None:
    """Let packs import ``comfy_execution.graph(_utils)`` and ``comfy.comfy_types``.

    Only names that do not resolve to a real ComfyUI are provided, so in a ComfyUI
    install its own modules are used.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        if "comfy_execution" not in sys.modules and not importable("comfy_execution"):
            package = shim_module("comfy_execution", package=True)
            package.graph = shim_module(
                "comfy_execution.graph",
                ExecutionBlocker=ExecutionBlocker,
                DynamicPrompt=DynamicPrompt,
            )
            package.graph_utils = shim_module(
                "comfy_execution.graph_utils",
                GraphBuilder=GraphBuilder,
                Node=Node,
                is_link=is_link,
                add_graph_prefix=add_graph_prefix,
            )
        if "comfy" not in sys.modules and not importable("comfy"):
            package = shim_module("comfy", package=True)
            package.comfy_types = shim_module(
                "comfy.comfy_types", IO=IO, ComfyNodeABC=ComfyNodeABC, InputTypeDict=dict
            )
            package.utils = shim_module(
                "comfy.utils",
                ProgressBar=ProgressBar,
                set_progress_bar_enabled=set_progress_bar_enabled,
                set_progress_bar_global_hook=set_progress_bar_global_hook,
                __getattr__=_progress_setting,
            )


def importable(name: str) -> bool:
    """Whether a real module of that name can be imported (ComfyUI's, say)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def shim_module(name: str, package: bool = False, **attributes: Any) -> types.ModuleType:
    """A module made of ``attributes``, importable as ``name`` from now on."""
    module = types.ModuleType(name)
    if package:
        module.__path__ = []
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module
