"""The run side of observability: what the engine calls as nodes start and finish.

    >>> instruments = RunInstruments("g", "run-1", metrics=True, trace_rate=0.0,
    ...                              profile=True)
    >>> instruments.enabled
    True

One ``RunInstruments`` per run, in the process that runs the flow. It counts nodes in
flight and finished (Prometheus), opens the run span and a span per node
(OpenTelemetry), and gathers each node's measurement into the run's profile. Workers
send their measurements back with node results (``integration.observability.measure``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from integration.observability import metrics
from integration.observability.measure import Measured
from integration.observability.profile import NodeProfile, ProfileReport
from integration.result import NodeReport, NodeState, RunResult


class RunInstruments:
    """Metrics, spans and profile rows of one run; each part is off unless asked for.
    They are run hooks (``integration.engine.hooks.RunHooks``, which they satisfy
    without importing the engine): the engine calls them as nodes start and finish."""

    def __init__(
        self,
        graph: str,
        run_id: str | None,
        *,
        metrics: bool,
        trace_rate: float,
        profile: bool,
        cache_tiers: Iterable[str] = (),
    ) -> None:
        from integration.observability.tracing import sampled

        self.graph = graph
        self.run_id = run_id or ""
        self.metrics = metrics
        self.tracing = sampled(trace_rate)
        self.profile = profile
        self.cache_tiers = list(cache_tiers)
        self._in_flight: set[str] = set()
        self._spans: dict[str, Any] = {}
        self._run_span: Any = None
        self._rows: dict[str, NodeProfile] = {}

    @property
    def enabled(self) -> bool:
        return self.metrics or self.tracing or self.profile

    def start(self) -> None:
        if self.tracing:
            from integration.observability.tracing import ensure_provider, tracer

            ensure_provider()
            self._run_span = tracer().start_span(
                f"run_graph {self.graph}",
                attributes={"graph.name": self.graph, "execution.id": self.run_id},
            )

    def run_started(self, name: str, total: int) -> None:
        return None  # the run span opens in ``start``, before the engine exists

    def run_finished(self, result: RunResult) -> None:
        return None  # ``finish`` closes the run: it also builds the profile

    def node_started(self, node_id: str, node_type: str) -> dict[str, Any] | None:
        """Called as a node is handed to its runner; what the worker needs to measure
        it and to continue its trace (``None`` when nothing is on)."""
        if self.metrics and node_id not in self._in_flight:
            self._in_flight.add(node_id)
            metrics.NODES_IN_FLIGHT.inc()
        trace_headers = None
        if self.tracing:
            from integration.observability.tracing import carrier

            span = self._node_span(node_id, node_type)
            self._spans[node_id] = span
            trace_headers = carrier(span)
        # Output sizes feed the cache_written_bytes metric and the profile.
        size = (self.metrics and bool(self.cache_tiers)) or self.profile
        if not size and trace_headers is None:
            return None
        return {"profile": self.profile, "size": size, "trace": trace_headers}

    def _node_span(self, node_id: str, node_type: str) -> Any:
        from opentelemetry import trace

        from integration.observability.tracing import tracer

        return tracer().start_span(
            f"execute_node_{node_type}",
            context=trace.set_span_in_context(self._run_span),
            attributes={"node.id": node_id, "node.type": node_type, "execution.id": self.run_id},
        )

    def node_finished(
        self,
        report: NodeReport,
        finished: int = 0,
        total: int = 0,
        measured: Measured | None = None,
        cache_read_bytes: int | None = None,
    ) -> None:
        state = str(report.state)
        if self.metrics:
            if report.node_id in self._in_flight:
                self._in_flight.discard(report.node_id)
                metrics.NODES_IN_FLIGHT.dec()
            metrics.record_node(report.node_type, state, report.duration_s)
            if report.state == NodeState.CACHED:
                metrics.CACHE_HITS.labels(tier=report.cache_tier or "unknown").inc()
            elif report.cache_key is not None and self.cache_tiers:
                metrics.CACHE_MISSES.inc()
        written = None
        if (
            measured is not None
            and measured.output_bytes is not None
            and report.cache_key is not None
            and report.state == NodeState.COMPLETED
            and self.cache_tiers
        ):
            written = measured.output_bytes  # what the node's cache entry holds
            if self.metrics:
                for tier in self.cache_tiers:
                    metrics.CACHE_WRITTEN_BYTES.labels(tier=tier).inc(written)
        if self.tracing:
            self._end_node_span(report)
        if self.profile:
            cache = None
            if report.state == NodeState.CACHED:
                cache = f"hit:{report.cache_tier}"
            elif report.cache_key is not None and self.cache_tiers:
                cache = "miss"
            self._rows[report.node_id] = NodeProfile(
                node_id=report.node_id,
                node_type=report.node_type,
                state=state,
                wall_s=report.duration_s,
                cpu_s=measured.cpu_s if measured else None,
                peak_memory_bytes=measured.peak_memory_bytes if measured else None,
                output_bytes=measured.output_bytes if measured else None,
                cache=cache,
                cache_read_bytes=cache_read_bytes,
                cache_written_bytes=written,
            )

    def _end_node_span(self, report: NodeReport) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._spans.pop(report.node_id, None)
        if span is None:  # never submitted: served from the cache, skipped, blocked
            span = self._node_span(report.node_id, report.node_type)
        span.set_attribute("node.state", str(report.state))
        span.set_attribute("cache.hit", report.state == NodeState.CACHED)
        if report.cache_tier:
            span.set_attribute("cache.tier", report.cache_tier)
        span.set_attribute("retry.attempt", report.attempts)
        if report.duration_s is not None:
            span.set_attribute("node.duration_s", report.duration_s)
        error = report.error
        if error is not None and report.state in (NodeState.FAILED, NodeState.FALLBACK):
            span.add_event(
                "exception",
                {
                    "exception.type": error.exception_type,
                    "exception.message": error.message,
                    "exception.stacktrace": error.stacktrace,
                },
            )
            if report.state == NodeState.FAILED:
                span.set_status(Status(StatusCode.ERROR, error.message))
        span.end()

    def finish(
        self, result: RunResult, predecessors: Mapping[str, Iterable[str]]
    ) -> ProfileReport | None:
        """Close the run: end its span, count it, and build its profile (if asked)."""
        if self.metrics:
            metrics.RUNS.labels(state=str(result.state)).inc()
            for node_id in list(self._in_flight):
                self._in_flight.discard(node_id)
                metrics.NODES_IN_FLIGHT.dec()
        if self.tracing:
            from opentelemetry.trace import Status, StatusCode

            for span in self._spans.values():
                span.end()
            self._spans.clear()
            if self._run_span is not None:
                self._run_span.set_attribute("graph.state", str(result.state))
                if not result.ok:
                    self._run_span.set_status(Status(StatusCode.ERROR, str(result.state)))
                self._run_span.end()
        if not self.profile:
            return None
        rows = [self._rows[n] for n in result.nodes if n in self._rows]
        return ProfileReport.build(result.graph, rows, predecessors)

    def crashed(self, exc: BaseException) -> None:
        if self.tracing and self._run_span is not None:
            from opentelemetry.trace import Status, StatusCode

            for span in self._spans.values():
                span.end()
            self._run_span.record_exception(exc)
            self._run_span.set_status(Status(StatusCode.ERROR, str(exc)))
            self._run_span.end()
        if self.metrics:
            for _ in self._in_flight:
                metrics.NODES_IN_FLIGHT.dec()
            self._in_flight.clear()
