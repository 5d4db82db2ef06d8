"""Run a ComfyUI prompt with ComfyUI's semantics on the engine's one scheduler.

    >>> # program = ComfyProgram(prompt, roots, types)
    >>> # Scheduler(program.plan(), comfy_inline_backend(), {}, program=program).run()

``ComfyProgram`` is the ComfyUI node wrapper the scheduler runs a prompt with
(``integration.engine.program``); it follows ComfyUI's ``execution.py`` and
``comfy_execution/graph.py``:

- **Roots.** Only the output nodes (or the nodes asked for) and what they need run.
- **Lazy inputs.** Inputs marked ``lazy`` are not scheduled up front. Before a node with
  ``check_lazy_status`` runs, the method is called (once per list item) with what is
  available; the inputs it names are linked, and the node waits for them.
- **Expansion.** A node may return ``{"result": ..., "expand": graph}``: the graph's
  nodes join the run (output nodes among them become roots), and links in ``result``
  are resolved from them once they finish.
- **Blockers.** An ``ExecutionBlocker`` flows like a value; the calls it reaches are
  not made (see ``integration.comfy.nodes.call_node``).
- **Caching.** Every node has a content key (class, version, literal inputs, the keys
  of linked nodes, ``IS_CHANGED``): a node found in the cache is not run, and nothing
  it needs is scheduled. ``IS_CHANGED`` returning NaN, or raising, makes the key
  unique to the run. ``NOT_IDEMPOTENT`` and ``UNIQUE_ID`` put the node id in the key.
  Entries are the same as graph nodes': a ``NodeOutput`` (values ``outputs``, one list
  per slot, and ``ui``), stored by ``store`` and read by the scheduler's loader.

The scheduler does the rest, as for a nodegraph graph: independent nodes run side by
side (the backend decides how), a failed node is handled by its policy (by default it
fails only the nodes that need it), cancel, hooks and reports.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from integration.cache.keys import NodeKey, UnhashableValueError, node_key, value_digest
from integration.comfy.nodes import (
    ComfyNodeType,
    NodeOutcome,
    call_node,
    map_over_list,
    merge_results,
)
from integration.comfy.runtime import DynamicPrompt, ExecutionBlocker, is_link
from integration.engine.backend import InlineBackend, Submission
from integration.engine.program import RunningGraph
from integration.engine.units import NodeOutput
from integration.errors import ErrorType, NodegraphError
from integration.graph.context import ExecutionContext, current_context
from integration.graph.model import Graph
from integration.graph.nodetype import NodeType
from integration.graph.policy import ErrorPolicy
from integration.graph.validate import BoundGraph, BoundNode
from integration.observability.measure import NodeMeasurement
from integration.observability.tracing import current_from
from integration.plan import Plan, PlanStep

logger = logging.getLogger("nodegraph.comfy")

COMFY_KIND = "comfy"
"""The ``Submission.kind`` of a ComfyUI node call; its arguments hold ``call``."""

HIDDEN_KINDS = frozenset(
    {
        "PROMPT",
        "DYNPROMPT",
        "EXTRA_PNGINFO",
        "UNIQUE_ID",
        "AUTH_TOKEN_COMFY_ORG",
        "API_KEY_COMFY_ORG",
    }
)
"""Hidden inputs the executor fills in; other hidden inputs come from the prompt."""

ResultStore = Callable[[str, NodeOutput], None]
"""Persists a node's final output under its key (the cache's entry format)."""


class ComfyExecutionError(NodegraphError):
    """A node broke the execution protocol (a bad lazy request, a duplicate node)."""

    error_type = ErrorType.VALIDATION


@dataclass
class NodeCall:
    """One node execution to dispatch: everything the node function needs."""

    node_id: str
    class_type: str
    node_type: NodeType
    inputs: dict[str, list[Any]]

    @property
    def name(self) -> str:
        return f"{self.class_type} #{self.node_id}"


def execute_call(call: NodeCall, observe: Mapping[str, Any] | None = None) -> NodeOutput:
    """Run one node call: ComfyUI classes with their list semantics, nodegraph types
    once per list item. The output's values are ``outputs`` (a list per slot) and
    ``ui``, and, when set, ``blocked`` (blockers' messages) and ``expand``.

    ``observe`` (from the run's instruments) asks for a measurement of the call (the
    profile's CPU time, peak memory and output size) and carries the node span's trace
    context, made current while the node runs."""
    measurement = None
    try:
        if observe is None:
            outcome = _call(call)
        else:
            measurement = NodeMeasurement(bool(observe.get("profile")), bool(observe.get("size")))
            with current_from(observe.get("trace")), measurement:
                outcome = _call(call)
    except BaseException as exc:
        exc.nodegraph_measured = measurement.result if measurement else None  # type: ignore[attr-defined]
        raise
    values: dict[str, Any] = {"outputs": outcome.outputs, "ui": outcome.ui}
    if outcome.blocked:
        values["blocked"] = outcome.blocked
    if outcome.expansions is not None:
        values["expand"] = outcome.expansions
    measured = measurement.finish(outcome.outputs) if measurement else None
    return NodeOutput(values, outcome.duration_s, measured=measured)


def _call(call: NodeCall) -> NodeOutcome:
    if isinstance(call.node_type, ComfyNodeType):
        return call_node(call.node_type, call.node_id, call.inputs)
    return _call_nodegraph_type(call)


def _inline_call(arguments: Mapping[str, Any]) -> NodeOutput:
    return execute_call(arguments["call"], arguments.get("observe"))


def comfy_inline_backend() -> InlineBackend:
    """The inline backend with the ComfyUI node call (tests, no runner)."""
    return InlineBackend(calls={COMFY_KIND: _inline_call})


def _call_nodegraph_type(call: NodeCall) -> NodeOutcome:
    started = time.perf_counter()
    node_type = call.node_type
    # The context of the surrounding task (set by the backend), so that nodegraph types
    # that ask for one log and report progress as they do in a graph; with no backend
    # context (the inline backend) the node still gets one, logging to nodegraph's log.
    context = None
    if node_type.context_param:
        context = current_context() or ExecutionContext(
            execution_id="",
            node_id=call.node_id,
            node_type=node_type.qualified_name,
            logger=logger,
        )

    class _Adapter:
        def call(self, **values: Any) -> tuple[Any, ...]:
            outputs = node_type.invoke(values, context)
            return tuple(outputs[name] for name in node_type.outputs)

    results = map_over_list(_Adapter(), call.inputs, "call")
    outcome = NodeOutcome(outputs=merge_results(results, ()))
    outcome.duration_s = time.perf_counter() - started
    return outcome


def empty_plan(name: str) -> Plan:
    """A plan with no nodes: where a program's run starts (the run adds to it)."""
    bound = BoundGraph(Graph(name=name), {}, [], {})
    return Plan(graph=bound, steps={}, order=[], levels=[], outputs=[])


def _slots(output: NodeOutput) -> list[list[Any]]:
    """A finished node's outputs, one list per slot (none for a stand-in without)."""
    slots = output.values.get("outputs")
    return slots if isinstance(slots, list) else []


class ComfyProgram:
    """A validated prompt as the scheduler's program (``integration.engine.program``).

    ``roots`` are the output nodes to run (or those asked for); ``types`` the node
    types by class. ``policy`` is every node's error policy (the config's default);
    ``store`` persists each node's final output under its content key;
    ``node_errors`` are those of outputs validation left out, reported with the run.
    """

    def __init__(
        self,
        prompt: Mapping[str, Any],
        roots: list[str],
        types: Mapping[str, NodeType],
        *,
        name: str = "workflow",
        run_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        policy: ErrorPolicy | None = None,
        store: ResultStore | None = None,
        node_errors: Mapping[str, Any] | None = None,
    ) -> None:
        self.dynprompt = DynamicPrompt(dict(prompt))
        self.node_errors = dict(node_errors or {})
        self.roots = list(roots)
        self.types = types
        self.name = name
        self.run_id = run_id or uuid.uuid4().hex
        self.extra_data = dict(extra_data or {})
        self.policy = policy
        self.store = store
        self.ui: dict[str, dict[str, list[Any]]] = {}
        self._graph: RunningGraph | None = None
        self._keys: dict[str, NodeKey] = {}
        self._expansions: dict[str, list[tuple[bool, tuple[Any, ...]]]] = {}
        self._asked: dict[str, set[str]] = {}  # lazy inputs each node asked for
        self._reasons: dict[str, str] = {}

    def plan(self) -> Plan:
        """The empty plan a run starts from: the program adds the nodes."""
        return empty_plan(self.name)

    @property
    def graph(self) -> RunningGraph:
        if self._graph is None:
            raise RuntimeError("the program is not running: Scheduler.run() begins it")
        return self._graph

    # -- the program ------------------------------------------------------------------

    def begin(self, graph: RunningGraph) -> None:
        self._graph = graph
        for root in self.roots:
            self._add_node(root)

    def prepare(self, node_id: str) -> Submission | NodeOutput | None:
        if node_id in self._expansions:
            return self._resolve_expansion(node_id)
        node = self.dynprompt.get_node(node_id)
        class_type = node["class_type"]
        node_type = self.types[class_type]
        lazy = isinstance(node_type, ComfyNodeType) and node_type.defines("check_lazy_status")
        asked = self._asked.setdefault(node_id, set())
        while True:
            inputs, missing = self._input_data(node_id, node, node_type)
            if not lazy:
                break
            assert isinstance(node_type, ComfyNodeType)
            needed = [n for n in self._lazy_needs(node_type, inputs, missing) if n not in asked]
            if not needed:
                break
            asked.update(needed)
            for input_name in needed:
                self._make_input_strong_link(node_id, input_name)
            if self.graph.waits(node_id) or node_id in self.graph.reports:
                # It waits for what it asked for; once that is done it is asked again,
                # as ComfyUI re-executes the node.
                return None
        call = NodeCall(node_id, class_type, node_type, inputs)
        return Submission(node_id, COMFY_KIND, (node_id,), {"call": call})

    def finished(self, node_id: str, output: NodeOutput) -> bool:
        expansions = output.values.get("expand")
        if expansions is not None:
            self._expand(node_id, expansions)
            return True
        blocked = output.values.get("blocked") or ()
        reason = "; ".join(f"Execution Blocked: {m}" for m in blocked)
        if reason:
            self._reasons[node_id] = reason
        self._done(node_id, _slots(output), output.values.get("ui") or {})
        return False

    def reason(self, node_id: str) -> str | None:
        return self._reasons.pop(node_id, None)

    def stalled(self, waiting: list[str]) -> tuple[str, BaseException]:
        """As in ComfyUI, a cycle is blamed on the node that expanded into it, if an
        expansion made it."""
        stuck = sorted(waiting)
        display = self.dynprompt.get_display_node_id
        ephemeral = next((n for n in stuck if display(n) != n), None)
        blamed = stuck[0]
        if ephemeral is not None:
            blamed = display(ephemeral) if display(ephemeral) in stuck else ephemeral
        return blamed, ComfyExecutionError(
            f"Dependency cycle detected among nodes {', '.join(stuck)}"
        )

    def outputs(self) -> dict[str, Any]:
        return dict(self.ui)

    def extra(self) -> dict[str, Any]:
        described: dict[str, Any] = {"roots": self.roots, "run_id": self.run_id}
        if self.node_errors:
            described["node_errors"] = self.node_errors  # outputs left out, as ComfyUI
        return {"comfy": described}

    # -- the execution list -----------------------------------------------------------

    def _step(self, node_id: str) -> PlanStep:
        node_type = self.types[self.dynprompt.get_node(node_id)["class_type"]]
        return PlanStep(BoundNode(node_id, node_type, {}, policy=self.policy), 0, [])

    def _add_node(self, node_id: str, include_lazy: bool = False) -> None:
        """Schedule a node and, through non-lazy links, everything it needs that is not
        already in the run or found in the cache."""
        graph = self.graph
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if graph.has_node(current):
                continue
            graph.keys[current] = self.key(current)
            step = self._step(current)
            if graph.add_cached(step):
                cached = graph.output_of(current)
                if cached.values.get("ui"):
                    self.ui[current] = cached.values["ui"]
                continue
            graph.add_node(step)
            node = self.dynprompt.get_node(current)
            for input_name, value in node.get("inputs", {}).items():
                if not is_link(value):
                    continue
                # As in ComfyUI, only top-level inputs are lazy, never dotted dynamic ones.
                spec = None if "." in input_name else self._input_spec(node, input_name)
                if spec is not None and spec.lazy and not (include_lazy and current == node_id):
                    continue
                source = str(value[0])
                links.append((source, current))
                if not graph.has_node(source):
                    stack.append(source)
        for source, target in links:
            graph.add_edge(source, target)

    def _link(self, source: str, target: str) -> None:
        if not self.graph.has_node(source):
            self._add_node(source)
        self.graph.add_edge(source, target)

    def _input_spec(self, node: Mapping[str, Any], input_name: str) -> Any:
        node_type = self.types.get(node.get("class_type", ""))
        if isinstance(node_type, ComfyNodeType):
            return node_type.signature.input(input_name)
        return None

    def _output(self, node_id: str) -> list[list[Any]] | None:
        """A finished node's outputs (a list per slot), or ``None`` if not finished."""
        report = self.graph.reports.get(node_id)
        if report is None or not report.state.ok:
            return None
        return _slots(self.graph.output_of(node_id))

    # -- one node ---------------------------------------------------------------------

    def _lazy_needs(
        self, node_type: ComfyNodeType, inputs: dict[str, list[Any]], missing: set[str]
    ) -> list[str]:
        answers = map_over_list(
            node_type.calls(), inputs, "check_lazy_status", node_type.signature.input_is_list
        )
        wanted: list[str] = []
        for answer in answers:
            if isinstance(answer, list | tuple):
                wanted.extend(a for a in answer if isinstance(a, str))
        return [name for name in dict.fromkeys(wanted) if name not in inputs or name in missing]

    def _make_input_strong_link(self, node_id: str, input_name: str) -> None:
        inputs = self.dynprompt.get_node(node_id).get("inputs", {})
        if input_name not in inputs:
            raise ComfyExecutionError(
                f"node {node_id} says it needs input {input_name!r}, but there is no input "
                "to that node at all"
            )
        value = inputs[input_name]
        if not is_link(value):
            raise ComfyExecutionError(
                f"node {node_id} says it needs input {input_name!r}, but that value is a constant"
            )
        self._link(str(value[0]), node_id)

    def _input_data(
        self, node_id: str, node: Mapping[str, Any], node_type: NodeType
    ) -> tuple[dict[str, list[Any]], set[str]]:
        """Inputs as lists (ComfyUI's ``get_input_data``): linked outputs, literals,
        hidden values; unevaluated links are ``[None]`` and listed as missing."""
        values: dict[str, list[Any]] = {}
        missing: set[str] = set()
        for input_name, value in node.get("inputs", {}).items():
            spec = self._input_spec(node, input_name)
            if is_link(value) and not (spec is not None and spec.raw_link):
                source, slot = str(value[0]), int(value[1])
                produced = self._output(source) if self.graph.has_node(source) else None
                if produced is None or slot >= len(produced):
                    values[input_name] = [None]
                    missing.add(input_name)
                else:
                    values[input_name] = produced[slot]
            else:
                values[input_name] = [value]
        if isinstance(node_type, ComfyNodeType):
            for input_name, kind in node_type.signature.hidden().items():
                if kind in HIDDEN_KINDS and input_name not in values:
                    values[input_name] = [self._hidden_value(kind, node_id)]
        return values, missing

    def _hidden_value(self, kind: str, node_id: str) -> Any:
        if kind == "PROMPT":
            return self.dynprompt.get_original_prompt()
        if kind == "DYNPROMPT":
            return self.dynprompt
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node_id
        return self.extra_data.get(kind.lower())

    def _expand(
        self, node_id: str, expansions: list[tuple[dict[str, Any] | None, tuple[Any, ...]]]
    ) -> None:
        stored: list[tuple[bool, tuple[Any, ...]]] = []
        new_outputs: list[str] = []
        links: list[str] = []
        for graph, result in expansions:
            if graph is None:
                stored.append((False, result))
                continue
            for new_id in graph:
                if self.dynprompt.has_node(new_id):
                    raise ComfyExecutionError(
                        f"node {node_id} expanded into node {new_id!r}, which already "
                        "exists; ids must be unique and deterministic (use GraphBuilder)"
                    )
            for new_id, info in graph.items():
                class_type = info.get("class_type")
                if class_type not in self.types:
                    raise ComfyExecutionError(
                        f"node {node_id} expanded into node {new_id!r} of unknown class "
                        f"{class_type!r}"
                    )
                display = info.get("override_display_id", node_id)
                self.dynprompt.add_ephemeral_node(new_id, info, node_id, display)
                new_type = self.types[class_type]
                if isinstance(new_type, ComfyNodeType) and new_type.signature.output_node:
                    new_outputs.append(new_id)
            links.extend(str(value[0]) for value in result if is_link(value))
            stored.append((True, result))
        self._expansions[node_id] = stored
        for new_id in new_outputs:
            self._add_node(new_id)
        for source in links:
            self._link(source, node_id)

    def _resolve_expansion(self, node_id: str) -> NodeOutput:
        class_type = self.dynprompt.get_node(node_id)["class_type"]
        resolved: list[tuple[Any, ...]] = []
        for from_graph, result in self._expansions.pop(node_id):
            if not from_graph:
                resolved.append(result)
                continue
            values: list[Any] = []
            for item in result:
                if is_link(item):
                    # ComfyUI spreads the linked output's items into the result tuple.
                    values.extend(_slots(self.graph.output_of(str(item[0])))[int(item[1])])
                else:
                    values.append(item)
            resolved.append(tuple(values))
        node_type = self.types[class_type]
        is_list = node_type.signature.output_is_list if isinstance(node_type, ComfyNodeType) else ()
        merged = merge_results(resolved, is_list)
        ui = self.ui.get(node_id, {})
        self._reasons[node_id] = "expanded"
        self._done(node_id, merged, ui)
        return NodeOutput({"outputs": merged, "ui": ui}, 0.0)

    def _done(self, node_id: str, outputs: list[list[Any]], ui: dict[str, list[Any]]) -> None:
        """A node's final output: its UI values, and its cache entry. Run-scoped keys
        are stored too: they are the checkpoints a resumed run reads."""
        if ui:
            self.ui[node_id] = ui
        key = self._keys.get(node_id)
        if self.store is None or key is None:
            return
        try:
            self.store(key.key, NodeOutput({"outputs": outputs, "ui": ui}, 0.0))
        except Exception as exc:  # an output that cannot be pickled is simply not cached
            logger.warning("node %s: result not cached: %s", node_id, exc)

    # -- caching ----------------------------------------------------------------------

    def key(self, node_id: str) -> NodeKey:
        """The node's cache key, computed from the keys of the nodes it links to.

        A node in a link cycle (which an expansion can make) gets a run-scoped key;
        the run then fails the cycle."""
        stack = [node_id]
        visiting: set[str] = set()  # waiting for the keys of the nodes above them
        while stack:
            current = stack[-1]
            if current in self._keys:
                stack.pop()
                continue
            visiting.add(current)
            inputs = self.dynprompt.get_node(current).get("inputs", {})
            sources = [str(v[0]) for v in inputs.values() if is_link(v)]
            todo = [s for s in sources if s not in self._keys and s not in visiting]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            self._keys[current] = self._compute_key(current)
        return self._keys[node_id]

    def _compute_key(self, node_id: str) -> NodeKey:
        node = self.dynprompt.get_node(node_id)
        class_type = node["class_type"]
        node_type = self.types[class_type]
        shared = True
        port_keys: dict[str, Any] = {}
        for input_name, value in node.get("inputs", {}).items():
            if is_link(value):
                upstream = self._keys.get(str(value[0]))
                if upstream is None:  # a cycle through this link
                    shared = False
                    port_keys[input_name] = ("cycle", str(value[0]))
                    continue
                shared = shared and upstream.shared
                port_keys[input_name] = ("edge", upstream.key, f"out{int(value[1])}", None)
            else:
                try:
                    port_keys[input_name] = ("value", value_digest(value))
                except UnhashableValueError:
                    shared = False  # a literal nodegraph cannot hash: never reuse
                    port_keys[input_name] = ("value", repr(type(value)))
        fingerprint: Any = None
        if isinstance(node_type, ComfyNodeType):
            changed = self._is_changed(node_id, node, node_type)
            if changed is _ALWAYS:
                shared = False
                changed = None
            uses_id = (
                node_type.not_idempotent or "UNIQUE_ID" in node_type.signature.hidden().values()
            )
            fingerprint = [_jsonish(changed), node_id if uses_id else None]
        key = node_key(
            class_type,
            node_type.version,
            port_keys,
            fingerprint,
            None if shared else self.run_id,
        )
        return NodeKey(key, "content" if shared else "run")

    def _is_changed(self, node_id: str, node: Mapping[str, Any], node_type: ComfyNodeType) -> Any:
        if not node_type.defines("IS_CHANGED"):
            return None
        arguments: dict[str, list[Any]] = {}
        for input_name, value in node.get("inputs", {}).items():
            arguments[input_name] = [None if is_link(value) else value]
        for input_name, kind in node_type.signature.hidden().items():
            if kind in HIDDEN_KINDS and input_name not in arguments:
                arguments[input_name] = [self._hidden_value(kind, node_id)]
        try:
            answers = map_over_list(node_type.calls(instance=False), arguments, "IS_CHANGED")
        except Exception as exc:
            logger.warning(
                "node %s (%s): IS_CHANGED raised %r; running it", node_id, node["class_type"], exc
            )
            return _ALWAYS
        answers = [None if isinstance(a, ExecutionBlocker) else a for a in answers]
        if any(isinstance(a, float) and math.isnan(a) for a in answers):
            return _ALWAYS
        return answers


_ALWAYS = object()


def _jsonish(value: Any) -> Any:
    try:
        value_digest(value)
    except UnhashableValueError:
        return repr(value)
    return value
