"""Run a ComfyUI prompt with ComfyUI's semantics; each node execution is dispatched.

    >>> # see integration.prefect.comfy, which runs this inside a Prefect flow

The executor follows ComfyUI's ``execution.py`` and ``comfy_execution/graph.py``:

- **Roots.** Only the output nodes (or the nodes asked for) and what they need run.
- **Lazy inputs.** Inputs marked ``lazy`` are not scheduled up front. Before a node with
  ``check_lazy_status`` runs, the method is called (once per list item) with what is
  available; the inputs it names are scheduled and the node waits for them.
- **Expansion.** A node may return ``{"result": ..., "expand": graph}``: the graph's
  nodes join the run (output nodes among them become roots), and links in ``result``
  are resolved from them once they finish.
- **Blockers.** An ``ExecutionBlocker`` flows like a value; the calls it reaches are
  not made (see ``integration.comfy.nodes.call_node``).
- **Caching.** Every node has a content key (class, version, literal inputs, the keys
  of linked nodes, ``IS_CHANGED``): a node found in the cache is not run, and nothing
  it needs is scheduled. ``IS_CHANGED`` returning NaN, or raising, makes the key
  unique to the run. ``NOT_IDEMPOTENT`` and ``UNIQUE_ID`` put the node id in the key.

Unlike ComfyUI, independent nodes run side by side (the dispatcher decides how), and a
failed node fails only the nodes that need it, as everywhere in nodegraph.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from integration.cache.hierarchy import CacheHierarchy
from integration.cache.keys import UnhashableValueError, node_key, value_digest
from integration.comfy.nodes import ComfyNodeType, NodeOutcome, map_over_list, merge_results
from integration.comfy.runtime import DynamicPrompt, ExecutionBlocker, is_link
from integration.errors import DependencyError, ErrorType, NodeError, NodegraphError
from integration.graph.nodetype import NodeType
from integration.result import NodeReport, NodeState, RunResult, RunState

logger = logging.getLogger("nodegraph.comfy")

NodeListener = Callable[[NodeReport, int, int], None]

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


class Dispatch(Protocol):
    """Runs node calls (inline, on threads, processes or Dask) and hands back results."""

    def submit(self, call: NodeCall) -> None: ...

    def finished(self) -> tuple[NodeCall, NodeOutcome | BaseException, str | None]:
        """Block until a submitted call is done: the call, its outcome or error, and the
        id of the task run that executed it (``None`` without one)."""
        ...


def execute_call(call: NodeCall) -> NodeOutcome:
    """Run one dispatched call: ComfyUI classes with their list semantics, nodegraph
    types once per list item."""
    from integration.comfy.nodes import call_node

    if isinstance(call.node_type, ComfyNodeType):
        return call_node(call.node_type, call.node_id, call.inputs)
    return _call_nodegraph_type(call.node_type, call.inputs)


def _call_nodegraph_type(node_type: NodeType, inputs: Mapping[str, list[Any]]) -> NodeOutcome:
    started = time.perf_counter()

    class _Adapter:
        def call(self, **values: Any) -> tuple[Any, ...]:
            outputs = node_type.invoke(values)
            return tuple(outputs[name] for name in node_type.outputs)

    results = map_over_list(_Adapter(), inputs, "call")
    outcome = NodeOutcome(outputs=merge_results(results, ()))
    outcome.duration_s = time.perf_counter() - started
    return outcome


class InlineDispatch:
    """Runs each call at once in this thread (tests, and the sequential strategy)."""

    def __init__(self) -> None:
        self._done: list[tuple[NodeCall, NodeOutcome | BaseException, str | None]] = []

    def submit(self, call: NodeCall) -> None:
        try:
            self._done.append((call, execute_call(call), None))
        except Exception as exc:
            self._done.append((call, exc, None))

    def finished(self) -> tuple[NodeCall, NodeOutcome | BaseException, str | None]:
        return self._done.pop(0)


@dataclass
class _Key:
    key: str
    shared: bool  # False: unique to this run, never read from the cache


@dataclass
class _Pending:
    """The execution list: nodes to run and what each waits for (strong links)."""

    waiting: dict[str, set[str]] = field(default_factory=dict)  # node -> blockers
    blocking: dict[str, set[str]] = field(default_factory=dict)  # node -> dependents

    def ready(self, running: set[str]) -> list[str]:
        return [n for n, blockers in self.waiting.items() if not blockers and n not in running]


class ComfyExecution:
    """One run of a validated prompt."""

    def __init__(
        self,
        prompt: Mapping[str, Any],
        roots: list[str],
        types: Mapping[str, NodeType],
        dispatch: Dispatch,
        *,
        name: str = "workflow",
        cache: CacheHierarchy | None = None,
        refresh: bool = False,
        run_id: str | None = None,
        listener: NodeListener | None = None,
        extra_data: Mapping[str, Any] | None = None,
    ) -> None:
        self.dynprompt = DynamicPrompt(dict(prompt))
        self.roots = list(roots)
        self.types = types
        self.dispatch = dispatch
        self.name = name
        self.cache = cache
        self.refresh = refresh
        self.run_id = run_id or uuid.uuid4().hex
        self.listener = listener
        self.extra_data = dict(extra_data or {})
        self.outputs: dict[str, list[list[Any]]] = {}
        self.ui: dict[str, dict[str, list[Any]]] = {}
        self.reports: dict[str, NodeReport] = {}
        self.failed: set[str] = set()
        self._keys: dict[str, _Key] = {}
        self._pending = _Pending()
        self._running: set[str] = set()
        self._subgraph_results: dict[str, list[tuple[bool, tuple[Any, ...]]]] = {}
        self._total = 0

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.perf_counter()
        if self.cache is not None:
            self.cache.start_run()  # refused entries and shared tiers: warned once per run
        for root in self.roots:
            self._add_node(root)
        while True:
            for node_id in self._pending.ready(self._running):
                self._start(node_id)
            if self._running:
                call, outcome, task_run_id = self.dispatch.finished()
                self._running.discard(call.node_id)
                self._finish(call, outcome, task_run_id)
                continue
            if not self._pending.ready(self._running):
                break
        if self._pending.waiting:
            self._fail_cycle()
        return self._result(time.perf_counter() - started)

    def _result(self, duration: float) -> RunResult:
        failed = any(r.state == NodeState.FAILED for r in self.reports.values())
        outputs = {node_id: self.ui[node_id] for node_id in self.ui}
        return RunResult(
            graph=self.name,
            state=RunState.FAILED if failed else RunState.COMPLETED,
            outputs=outputs,
            nodes=dict(self.reports),
            duration_s=duration,
            extra={"comfy": {"roots": self.roots, "run_id": self.run_id}},
        )

    # -- the execution list -------------------------------------------------------------

    def _add_node(self, node_id: str, include_lazy: bool = False) -> None:
        """Schedule a node and, through non-lazy links, everything it needs that is not
        already finished or found in the cache."""
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending.waiting or self._done(current):
                continue
            if self._from_cache(current):
                continue
            self._pending.waiting[current] = set()
            self._total += 1
            node = self.dynprompt.get_node(current)
            for input_name, value in node.get("inputs", {}).items():
                if not is_link(value):
                    continue
                spec = self._input_spec(node, input_name)
                if spec is not None and spec.lazy and not (include_lazy and current == node_id):
                    continue
                source = str(value[0])
                links.append((source, current))
                if not self._done(source):
                    stack.append(source)
        for source, target in links:
            self._strong_link(source, target)

    def _strong_link(self, source: str, target: str) -> None:
        if source in self.failed:
            return self._mark_upstream_failed(target, source)
        if self._done(source):
            return
        if source not in self._pending.waiting:
            self._add_node(source)
            if self._done(source):
                return
        self._pending.waiting.setdefault(target, set()).add(source)
        self._pending.blocking.setdefault(source, set()).add(target)

    def _done(self, node_id: str) -> bool:
        return node_id in self.outputs or node_id in self.failed

    def _input_spec(self, node: Mapping[str, Any], input_name: str) -> Any:
        node_type = self.types.get(node.get("class_type", ""))
        if isinstance(node_type, ComfyNodeType):
            return node_type.signature.input(input_name)
        return None

    # -- one node -------------------------------------------------------------------------

    def _start(self, node_id: str) -> None:
        if node_id in self._subgraph_results:
            self._resolve_expansion(node_id)
            return
        node = self.dynprompt.get_node(node_id)
        node_type = self.types[node["class_type"]]
        inputs, missing = self._input_data(node_id, node, node_type)
        if isinstance(node_type, ComfyNodeType) and hasattr(
            node_type.comfy_class, "check_lazy_status"
        ):
            try:
                needed = self._lazy_needs(node_type, inputs, missing)
                for input_name in needed:
                    self._make_input_strong_link(node_id, input_name)
            except Exception as exc:
                self._fail(node_id, node["class_type"], exc)
                return
            if needed:
                # It waits for what it asked for (or, if that was at hand, is started
                # again with it, and asked again, as ComfyUI re-executes the node).
                return
        self._running.add(node_id)
        self.dispatch.submit(NodeCall(node_id, node["class_type"], node_type, inputs))

    def _lazy_needs(
        self, node_type: ComfyNodeType, inputs: dict[str, list[Any]], missing: set[str]
    ) -> list[str]:
        instance = node_type.comfy_class()
        answers = map_over_list(
            instance, inputs, "check_lazy_status", node_type.signature.input_is_list
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
        self._strong_link(str(value[0]), node_id)

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
                produced = self.outputs.get(source)
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

    def _finish(
        self, call: NodeCall, outcome: NodeOutcome | BaseException, task_run_id: str | None
    ) -> None:
        node_id = call.node_id
        if isinstance(outcome, BaseException):
            self._fail(node_id, call.class_type, outcome, task_run_id)
            return
        if outcome.expansions is not None:
            try:
                self._expand(node_id, outcome)
            except Exception as exc:
                self._fail(node_id, call.class_type, exc, task_run_id)
            return
        reason = "; ".join(f"Execution Blocked: {m}" for m in outcome.blocked) or None
        self._complete(
            node_id,
            outcome.outputs,
            outcome.ui,
            NodeReport(
                node_id,
                call.class_type,
                NodeState.COMPLETED,
                duration_s=outcome.duration_s,
                task_run_id=task_run_id,
                cache_key=self.key(node_id).key,
                attempts=1,
                reason=reason,
            ),
            store=True,
        )

    def _expand(self, node_id: str, outcome: NodeOutcome) -> None:
        assert outcome.expansions is not None
        stored: list[tuple[bool, tuple[Any, ...]]] = []
        new_outputs: list[str] = []
        links: list[str] = []
        for graph, result in outcome.expansions:
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
        self._subgraph_results[node_id] = stored
        for new_id in new_outputs:
            self._add_node(new_id)
        for source in links:
            self._strong_link(source, node_id)

    def _resolve_expansion(self, node_id: str) -> None:
        class_type = self.dynprompt.get_node(node_id)["class_type"]
        resolved: list[tuple[Any, ...]] = []
        for from_graph, result in self._subgraph_results.pop(node_id):
            if not from_graph:
                resolved.append(result)
                continue
            values: list[Any] = []
            for item in result:
                if is_link(item):
                    # ComfyUI spreads the linked output's items into the result tuple.
                    values.extend(self.outputs[str(item[0])][int(item[1])])
                else:
                    values.append(item)
            resolved.append(tuple(values))
        node_type = self.types[class_type]
        is_list = node_type.signature.output_is_list if isinstance(node_type, ComfyNodeType) else ()
        merged = merge_results(resolved, is_list)
        self._complete(
            node_id,
            merged,
            self.ui.get(node_id, {}),
            NodeReport(
                node_id,
                class_type,
                NodeState.COMPLETED,
                cache_key=self.key(node_id).key,
                attempts=1,
                reason="expanded",
            ),
            store=True,
        )

    def _complete(
        self,
        node_id: str,
        outputs: list[list[Any]],
        ui: dict[str, list[Any]],
        report: NodeReport,
        store: bool,
    ) -> None:
        self.outputs[node_id] = outputs
        if ui:
            self.ui[node_id] = ui
        if store:
            self._store(node_id, outputs, ui)
        self._report(report)
        self._pending.waiting.pop(node_id, None)
        for dependent in self._pending.blocking.pop(node_id, set()):
            blockers = self._pending.waiting.get(dependent)
            if blockers is not None:
                blockers.discard(node_id)

    def _fail(
        self, node_id: str, class_type: str, exc: BaseException, task_run_id: str | None = None
    ) -> None:
        self.failed.add(node_id)
        self._pending.waiting.pop(node_id, None)
        self._report(
            NodeReport(
                node_id,
                class_type,
                NodeState.FAILED,
                error=NodeError.from_exception(node_id, class_type, exc),
                task_run_id=task_run_id,
                cache_key=self._keys[node_id].key if node_id in self._keys else None,
                attempts=1,
                duration_s=getattr(exc, "nodegraph_seconds", None),
            )
        )
        for dependent in sorted(self._pending.blocking.pop(node_id, set())):
            self._mark_upstream_failed(dependent, node_id)

    def _mark_upstream_failed(self, node_id: str, failed: str) -> None:
        if node_id in self.failed:
            return
        self.failed.add(node_id)
        self._pending.waiting.pop(node_id, None)
        class_type = self.dynprompt.get_node(node_id)["class_type"]
        error = DependencyError(f"node {node_id} needs node {failed}, which failed")
        self._report(
            NodeReport(
                node_id,
                class_type,
                NodeState.UPSTREAM_FAILED,
                error=NodeError.from_exception(node_id, class_type, error),
                reason=f"upstream node {failed} failed",
            )
        )
        for dependent in sorted(self._pending.blocking.pop(node_id, set())):
            self._mark_upstream_failed(dependent, node_id)

    def _fail_cycle(self) -> None:
        """Nothing can run but nodes wait: they wait on each other. As in ComfyUI, the
        cycle is blamed on the node that expanded into it, if an expansion made it."""
        stuck = sorted(self._pending.waiting)
        ephemeral = next((n for n in stuck if self.dynprompt.get_display_node_id(n) != n), None)
        blamed = stuck[0]
        if ephemeral is not None:
            display = self.dynprompt.get_display_node_id(ephemeral)
            blamed = display if display in self._pending.waiting else ephemeral
        class_type = self.dynprompt.get_node(blamed)["class_type"]
        self._fail(
            blamed,
            class_type,
            ComfyExecutionError(f"Dependency cycle detected among nodes {', '.join(stuck)}"),
        )
        for node_id in list(self._pending.waiting):
            self._mark_upstream_failed(node_id, blamed)

    def _report(self, report: NodeReport) -> None:
        self.reports[report.node_id] = report
        if self.listener is not None:
            self.listener(report, len(self.reports), max(self._total, len(self.reports)))

    # -- caching --------------------------------------------------------------------------

    def key(self, node_id: str) -> _Key:
        """The node's cache key, computed from the keys of the nodes it links to."""
        stack = [node_id]
        while stack:
            current = stack[-1]
            if current in self._keys:
                stack.pop()
                continue
            inputs = self.dynprompt.get_node(current).get("inputs", {})
            sources = [str(v[0]) for v in inputs.values() if is_link(v)]
            todo = [s for s in sources if s not in self._keys]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            self._keys[current] = self._compute_key(current)
        return self._keys[node_id]

    def _compute_key(self, node_id: str) -> _Key:
        node = self.dynprompt.get_node(node_id)
        class_type = node["class_type"]
        node_type = self.types[class_type]
        shared = True
        port_keys: dict[str, Any] = {}
        for input_name, value in node.get("inputs", {}).items():
            if is_link(value):
                upstream = self._keys[str(value[0])]
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
        return _Key(key, shared)

    def _is_changed(self, node_id: str, node: Mapping[str, Any], node_type: ComfyNodeType) -> Any:
        method = getattr(node_type.comfy_class, "IS_CHANGED", None)
        if method is None:
            return None
        arguments: dict[str, list[Any]] = {}
        for input_name, value in node.get("inputs", {}).items():
            arguments[input_name] = [None if is_link(value) else value]
        for input_name, kind in node_type.signature.hidden().items():
            if kind in HIDDEN_KINDS and input_name not in arguments:
                arguments[input_name] = [self._hidden_value(kind, node_id)]
        try:
            answers = map_over_list(node_type.comfy_class, arguments, "IS_CHANGED")
        except Exception as exc:
            logger.warning(
                "node %s (%s): IS_CHANGED raised %r; running it", node_id, node["class_type"], exc
            )
            return _ALWAYS
        answers = [None if isinstance(a, ExecutionBlocker) else a for a in answers]
        if any(isinstance(a, float) and math.isnan(a) for a in answers):
            return _ALWAYS
        return answers

    def _from_cache(self, node_id: str) -> bool:
        """Serve a node from the cache, if it is there; whether it was."""
        if self.cache is None or self.refresh:
            return False
        key = self.key(node_id)
        if not key.shared:
            return False
        hit = self.cache.load(key.key)
        if hit is None:
            return False
        entry = hit.value
        class_type = self.dynprompt.get_node(node_id)["class_type"]
        self._complete(
            node_id,
            entry["outputs"],
            entry.get("ui") or {},
            NodeReport(
                node_id, class_type, NodeState.CACHED, cache_tier=hit.tier, cache_key=key.key
            ),
            store=False,
        )
        return True

    def _store(self, node_id: str, outputs: list[list[Any]], ui: dict[str, list[Any]]) -> None:
        if self.cache is None:
            return
        key = self.key(node_id)
        if not key.shared:
            return
        try:
            self.cache.store(key.key, {"outputs": outputs, "ui": ui})
        except Exception as exc:  # an output that cannot be pickled is simply not cached
            logger.warning("node %s: result not cached: %s", node_id, exc)


_ALWAYS = object()


def _jsonish(value: Any) -> Any:
    try:
        value_digest(value)
    except UnhashableValueError:
        return repr(value)
    return value
