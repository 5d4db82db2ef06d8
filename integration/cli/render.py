"""Rich renderings for the CLI: progress, run summaries, problems, plans, node types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from integration.graph import GraphValidationError, NodeType
from integration.plan import Plan
from integration.result import NodeReport, NodeState, RunResult, RunState, to_jsonable

_STATE_STYLE = {
    NodeState.COMPLETED: "green",
    NodeState.CACHED: "cyan",
    NodeState.FALLBACK: "magenta",
    NodeState.FAILED: "bold red",
    NodeState.UPSTREAM_FAILED: "yellow",
    NodeState.SKIPPED: "yellow",
    NodeState.PENDING: "dim",
}

_RUN_STYLE = {
    RunState.COMPLETED: "green",
    RunState.PARTIAL: "yellow",
    RunState.FAILED: "bold red",
    RunState.HALTED: "bold yellow",
    RunState.CANCELLED: "bold yellow",
}


class NodeProgress:
    """A live bar on stderr: done/total, cached and failed counts, elapsed time, and the
    nodes running now (with the progress long nodes report). Fed by the run's node
    listener (``update``), its start hook (``started``) and nodes' ``progress`` calls."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[running]}"),
                console=console,
                transient=True,
            )
            if enabled
            else None
        )
        self._task: Any = None
        self._running: dict[str, str] = {}  # node id -> its latest progress, if any
        self._cached = 0
        self._failed = 0
        self._total = 0

    def __enter__(self) -> NodeProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, report: NodeReport, finished: int, total: int) -> None:
        self._running.pop(report.node_id, None)
        self._cached += report.state == NodeState.CACHED
        self._failed += report.state in (NodeState.FAILED, NodeState.UPSTREAM_FAILED)
        self._total = total
        self._refresh(finished)

    def started(self, node_id: str) -> None:
        self._running.setdefault(node_id, "")
        self._refresh(None)

    def hook(self, node_id: str, done: float, total: float | None, message: str) -> None:
        """A ``ProgressHook``: what a node's ``context.progress`` call reports."""
        if total:
            fraction: float | None = done / total
        else:
            fraction = done if 0.0 <= done <= 1.0 else None
        self.node_progress(node_id, fraction, message)

    def node_progress(self, node_id: str, fraction: float | None, message: str) -> None:
        shown = f"{fraction:.0%}" if fraction is not None else ""
        self._running[node_id] = " ".join(part for part in (shown, message) if part)
        self._refresh(None)

    def _refresh(self, finished: int | None) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(
                "nodes", total=self._total or None, counts="", running=""
            )
        names = [f"{n} ({p})" if p else n for n, p in list(self._running.items())[:3]]
        more = len(self._running) - len(names)
        running = (
            ("running: " + ", ".join(names) + (f" +{more}" if more > 0 else "")) if names else ""
        )
        fields: dict[str, Any] = {
            "counts": f"cached {self._cached} · failed {self._failed}",
            "running": running,
        }
        if finished is not None:
            fields["completed"] = finished
            fields["total"] = self._total
        self._progress.update(self._task, **fields)


def profile_table(console: Console, report: Any) -> None:
    """A run's profile: one row per node, then the critical path and the top nodes."""
    table = Table(title=f"profile of {report.graph!r}", title_justify="left")
    for column, justify in (
        ("node", "left"),
        ("state", "left"),
        ("wall", "right"),
        ("cpu", "right"),
        ("peak mem", "right"),
        ("output", "right"),
        ("cache", "left"),
        ("read", "right"),
        ("written", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in report.nodes:
        table.add_row(
            row.node_id,
            row.state,
            _seconds(row.wall_s),
            _seconds(row.cpu_s),
            _bytes(row.peak_memory_bytes),
            _bytes(row.output_bytes),
            row.cache or "",
            _bytes(row.cache_read_bytes),
            _bytes(row.cache_written_bytes),
        )
    console.print(table)
    console.print(
        f"critical path ({_seconds(report.critical_path_s)}): " + " → ".join(report.critical_path),
        overflow="fold",
    )
    console.print("slowest: " + ", ".join(report.top_time or ["-"]))
    console.print("most memory: " + ", ".join(report.top_memory or ["-"]))


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return ""


SUMMARY_ROWS = 100
"""Above this many nodes, the run summary lists only the nodes that did not complete
or load from the cache (up to this many), and counts every state."""
_ROUTINE = (NodeState.COMPLETED, NodeState.CACHED)


def run_summary(console: Console, result: RunResult) -> None:
    run_style = _RUN_STYLE.get(RunState(result.state), "")
    table = Table(
        title=f"graph {result.graph!r}: [{run_style}]{result.state}[/]", title_justify="left"
    )
    table.add_column("node")
    table.add_column("type", style="dim")
    table.add_column("state")
    table.add_column("time", justify="right")
    table.add_column("error / reason", overflow="fold")
    rows = list(result.nodes.values())
    if len(rows) > SUMMARY_ROWS:
        # Ten thousand rows take rich seconds to lay out and no one reads them: keep
        # the nodes that did not simply run or load, and count the rest.
        rows = [r for r in rows if r.state not in _ROUTINE][:SUMMARY_ROWS]
        counts = ", ".join(f"{count} {state}" for state, count in result.counts().items())
        table.caption = f"{len(rows)} of {len(result.nodes)} nodes shown; all: {counts}"
        table.caption_justify = "left"
    for report in rows:
        style = _STATE_STYLE.get(report.state, "")
        state = str(report.state)
        if report.cache_tier:
            state += f" ({report.cache_tier})"
        table.add_row(
            report.node_id,
            report.node_type,
            f"[{style}]{state}[/]",
            _duration(report.duration_s),
            escape(_why(report)),  # node errors quote values, which may hold "[/x]"
        )
    if rows:
        console.print(table)
    else:  # a large run in which every node completed or was cached
        console.print(table.title)
        console.print(table.caption)
    for report in rows:
        if report.state == NodeState.FAILED and report.error is not None:
            console.print(
                Panel(
                    Text(report.error.node_traceback or report.error.message),
                    title=f"{report.node_id} ({report.node_type}) failed: "
                    f"{report.error.error_type}",
                    title_align="left",
                    border_style="red",
                )
            )
    if result.outputs:
        outputs = Table(title="outputs", title_justify="left", show_header=False)
        outputs.add_column("name", style="bold")
        outputs.add_column("value", overflow="fold")
        shown = list(result.outputs.items())[:SUMMARY_ROWS]
        for name, value in shown:
            outputs.add_row(name, _short(to_jsonable(value)))
        if len(result.outputs) > len(shown):  # a graph whose every leaf is an output
            outputs.caption = f"{len(shown)} of {len(result.outputs)} outputs shown (--json: all)"
            outputs.caption_justify = "left"
        console.print(outputs)
    if result.skipped:
        console.print(
            f"[yellow]warning:[/] {len(result.skipped)} node(s) skipped by policy: "
            + ", ".join(result.skipped)
        )
    if result.halted_at:
        console.print(f"[bold yellow]halted[/] after node {result.halted_at!r} failed")
    if result.resume_hint:
        console.print(f"resume with: [bold]{result.resume_hint}[/]")
    if result.flow_run_id:
        console.print(f"flow run {result.flow_run_id}", style="dim")


def _why(report: NodeReport) -> str:
    if report.state in (NodeState.FAILED, NodeState.UPSTREAM_FAILED) and report.error:
        return f"{report.error.error_type}: {report.error.message}"
    return report.reason or ""


def problems(console: Console, error: GraphValidationError) -> None:
    count = len(error.problems)
    console.print(
        f"[bold red]graph {error.graph_name!r} is invalid[/] ({count} problem"
        f"{'s' if count != 1 else ''})"
    )
    table = Table(show_header=True)
    table.add_column("node")
    table.add_column("problem", style="yellow")
    table.add_column("message", overflow="fold")
    listed = [(node_id, p) for node_id, found in error.by_node().items() for p in found]
    for node_id, problem in listed[:SUMMARY_ROWS]:
        detail = f" ({problem.details})" if problem.details else ""
        table.add_row(node_id, problem.code, escape(problem.message + detail))
    if count > SUMMARY_ROWS:  # thousands of rows take rich minutes to lay out
        codes = Counter(p.code for _, p in listed)
        table.caption = f"{SUMMARY_ROWS} of {count} problems shown (--json: all): " + ", ".join(
            f"{n} {code}" for code, n in codes.most_common()
        )
        table.caption_justify = "left"
    console.print(table)


PLAN_ROWS = 50
"""Levels, and names in one list, that ``nodegraph plan`` shows before shortening."""


def _listed(names: list[str], joiner: str) -> str:
    if len(names) <= PLAN_ROWS:
        return joiner.join(names)
    return joiner.join(names[: PLAN_ROWS - 1]) + f"{joiner}… ({len(names)} in all)"


def plan(console: Console, the_plan: Plan, optimizer: dict[str, Any] | None = None) -> None:
    console.print(
        f"[bold]{the_plan.name}[/]: {len(the_plan.order)} nodes, {len(the_plan.levels)} levels"
    )
    # A 10,000-node plan would print for seconds: long lists are shortened (--json
    # has everything).
    table = Table("level", "width", "nodes (run side by side)")
    for depth, group in enumerate(the_plan.levels[:PLAN_ROWS]):
        table.add_row(str(depth), str(len(group)), _listed(group, ", "))
    if len(the_plan.levels) > PLAN_ROWS:
        table.add_row("…", "", f"{len(the_plan.levels) - PLAN_ROWS} more levels")
    console.print(table)
    console.print("order: " + _listed(the_plan.order, " → "), overflow="fold")
    if optimizer is not None:
        _optimizer(console, optimizer)
    skipped = sorted(set(the_plan.graph.nodes) - set(the_plan.steps))
    if skipped:
        console.print(f"not needed for the requested outputs: {', '.join(skipped)}", style="dim")


UNIT_ROWS = 50
"""Shared tasks listed by ``nodegraph plan``; lone nodes are one row per reason."""


def _optimizer(console: Console, report: dict[str, Any]) -> None:
    timed = report["critical_path_ms"]
    length = f", {timed:.2f} ms recorded" if timed is not None else ""
    console.print(
        f"critical path ({len(report['critical_path'])} nodes{length}): "
        + " → ".join(report["critical_path"]),
        overflow="fold",
    )
    console.print(
        f"tasks: {report['tasks']} for {sum(report['parallelism'])} nodes "
        f"(fusion {report['fusion']}, {report['strategy']} strategy, "
        f"{report['workers']} workers)"
    )
    table = Table("task", "kind", "nodes", "why", title="tasks", title_justify="left")
    shared = [unit for unit in report["units"] if unit["kind"] != "node"]
    for unit in shared[:UNIT_ROWS]:
        table.add_row(unit["name"], unit["kind"], str(len(unit["nodes"])), escape(unit["reason"]))
    if len(shared) > UNIT_ROWS:
        table.add_row(f"… {len(shared) - UNIT_ROWS} more shared tasks", "", "", "")
    for reason, nodes in report["own_task"].items():
        shown = ", ".join(nodes[:8]) + (f", … ({len(nodes)})" if len(nodes) > 8 else "")
        table.add_row(shown, "node", f"{len(nodes)} × 1", f"own task: {escape(reason)}")
    console.print(table, overflow="fold")


def node_types(console: Console, types: Iterable[NodeType]) -> None:
    table = Table("type", "description", "inputs", "outputs")
    for node_type in types:
        inputs = ", ".join(
            f"{p.name}: {p.type}" + ("" if p.required else "?") for p in node_type.inputs.values()
        )
        outputs = ", ".join(f"{p.name}: {p.type}" for p in node_type.outputs.values())
        table.add_row(node_type.qualified_name, node_type.description, inputs, outputs)
    console.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
