"""The flow body: run a plan's node tasks and collect a ``RunResult``.

    >>> # inside a Prefect flow:
    >>> # result = GraphExecution(plan, tasks, input_values).run(sequential=False)

Ready nodes are submitted as their last upstream finishes (in-degree counters, so a
run is linear in nodes plus edges). Consumers receive the producers' futures, never
copies of values. A failed node marks its descendants ``upstream_failed`` and
independent branches go on. An output is dropped once its last consumer has finished,
unless the caller asked for it.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture
from prefect.states import State

from integration.errors import ErrorType, NodeError
from integration.graph.order import descendants
from integration.plan import Plan, PlanStep
from integration.prefect.tasks import NodeOutput, Upstream
from integration.result import NodeReport, NodeState, RunResult, RunState

NodeListener = Callable[[NodeReport, int, int], None]
"""Called as ``listener(report, finished, total)`` each time a node finishes."""


class GraphExecution:
    """One run of a plan inside a Prefect flow."""

    def __init__(
        self,
        plan: Plan,
        tasks: Mapping[str, Task[..., NodeOutput]],
        inputs: Mapping[str, Any],
        listener: NodeListener | None = None,
    ) -> None:
        self.plan = plan
        self.tasks = tasks
        self.inputs = inputs
        self.listener = listener
        self.reports: dict[str, NodeReport] = {}
        # NodeOutput (sequential) or PrefectFuture (parallel), per producing node
        self.produced: dict[str, Any] = {}
        self._wanted = {request.node for request in plan.outputs}
        self._consumers_left = {n: len(s.consumers) for n, s in plan.steps.items()}
        self._successors = {n: s.consumers for n, s in plan.steps.items()}

    # -- strategies ---------------------------------------------------------------

    def run_sequential(self) -> RunResult:
        for node_id in self.plan.order:
            if node_id in self.reports:
                continue  # already marked upstream_failed
            step = self.plan.steps[node_id]
            state = self.tasks[node_id](**self._arguments(step), return_state=True)
            self._finish(node_id, state)
        return self._result()

    def run_parallel(self) -> RunResult:
        finished: queue.SimpleQueue[tuple[str, PrefectFuture[NodeOutput]]] = queue.SimpleQueue()
        waiting = {n: len(s.upstream) for n, s in self.plan.steps.items()}

        def submit(node_id: str) -> None:
            step = self.plan.steps[node_id]
            future = self.tasks[node_id].submit(**self._arguments(step))
            self.produced[node_id] = future
            future.add_done_callback(lambda f, n=node_id: finished.put((n, f)))

        for node_id in self.plan.order:
            if waiting[node_id] == 0:
                submit(node_id)
        total = len(self.plan.order)
        while len(self.reports) < total:
            node_id, future = finished.get()
            future.wait()
            ok = self._finish(node_id, future.state)
            if not ok:
                continue
            for consumer in self._successors[node_id]:
                waiting[consumer] -= 1
                if waiting[consumer] == 0 and consumer not in self.reports:
                    submit(consumer)
        return self._result()

    # -- bookkeeping --------------------------------------------------------------

    def _arguments(self, step: PlanStep) -> dict[str, Any]:
        literals: dict[str, Any] = {}
        upstream: dict[str, Upstream] = {}
        for port, binding in step.bindings.items():
            if binding.kind == "param":
                literals[port] = binding.value
            elif binding.kind == "input":
                value = self.inputs[binding.source_port]
                if binding.transform is None:
                    literals[port] = value
                else:
                    upstream[port] = (value, None, binding.transform)
            elif binding.kind == "edge":
                producer = self.produced[binding.source]
                upstream[port] = (producer, binding.source_port, binding.transform)
        return {
            "node_type": step.node.type,
            "node_id": step.node_id,
            "literals": literals,
            "upstream": upstream,
        }

    def _finish(self, node_id: str, state: State[Any]) -> bool:
        """Record a finished node; return whether it produced its outputs."""
        step = self.plan.steps[node_id]
        type_name = step.node.type.qualified_name
        task_run_id = state.state_details.task_run_id
        if state.is_completed():
            output: NodeOutput = state.result()
            if node_id not in self.produced or not isinstance(self.produced[node_id], PrefectFuture):
                self.produced[node_id] = output
            report = NodeReport(
                node_id, type_name, NodeState.COMPLETED, output.duration_s,
                task_run_id=str(task_run_id) if task_run_id else None,
            )
            self._report(report)
            self._release_inputs(step)
            return True

        exc = state.result(raise_on_failure=False)
        if not isinstance(exc, BaseException):
            exc = RuntimeError(state.message or f"task ended in state {state.type.value}")
        report = NodeReport(
            node_id, type_name, NodeState.FAILED, getattr(exc, "nodegraph_duration_s", None),
            error=NodeError.from_exception(node_id, type_name, exc),
            task_run_id=str(task_run_id) if task_run_id else None,
        )
        self._report(report)
        for blocked in sorted(descendants(self._successors, [node_id])):
            if blocked in self.reports:
                continue
            blocked_type = self.plan.steps[blocked].node.type.qualified_name
            self._report(NodeReport(
                blocked, blocked_type, NodeState.UPSTREAM_FAILED,
                error=NodeError(
                    node_id=blocked, node_type=blocked_type, error_type=ErrorType.DEPENDENCY,
                    message=f"not run: upstream node {node_id!r} failed",
                ),
            ))
        return False

    def _release_inputs(self, step: PlanStep) -> None:
        for upstream in step.upstream:
            self._consumers_left[upstream] -= 1
            if self._consumers_left[upstream] == 0 and upstream not in self._wanted:
                self.produced.pop(upstream, None)

    def _report(self, report: NodeReport) -> None:
        self.reports[report.node_id] = report
        if self.listener is not None:
            self.listener(report, len(self.reports), len(self.plan.order))

    def _result(self) -> RunResult:
        outputs: dict[str, Any] = {}
        for request in self.plan.outputs:
            report = self.reports.get(request.node)
            if report is None or report.state != NodeState.COMPLETED:
                continue
            produced = self.produced[request.node]
            output = produced.result() if isinstance(produced, PrefectFuture) else produced
            outputs[request.name] = output.values[request.port]
        failed = any(r.state != NodeState.COMPLETED for r in self.reports.values())
        ordered = {n: self.reports[n] for n in self.plan.order}
        return RunResult(
            graph=self.plan.name,
            state=RunState.FAILED if failed else RunState.COMPLETED,
            outputs=outputs,
            nodes=ordered,
        )

