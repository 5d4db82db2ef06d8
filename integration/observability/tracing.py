"""OpenTelemetry traces: one span per graph run, a child span per node.

    >>> from integration.observability.tracing import sampled
    >>> sampled(1.0), sampled(0.0)
    (True, False)

``monitoring.trace_sampling_rate`` (0 to 1; 0, the default, traces nothing) decides per
run whether the run is traced; a traced run has every node. Export follows the
standard ``OTEL_*`` variables: when no tracer provider is set up by the program,
nodegraph sets one whose exporter ``OTEL_TRACES_EXPORTER`` names (``otlp``, the
default, needs ``opentelemetry-exporter-otlp``; ``console``; ``none``), with
``OTEL_SERVICE_NAME`` (default ``nodegraph``) and the exporter's own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ...). A program that sets its own provider keeps it.

Node spans (``execute_node_<type>``) are opened by the process that runs the flow
when the node is submitted and closed when it reports, so they are children of the
run span whatever ran the node. The node span's context travels with the task, and the
worker makes it current while the node runs: spans a node opens itself are children
of its node span, in the worker's own tracer provider.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger("nodegraph.tracing")

TRACER_NAME = "nodegraph"
_propagator = TraceContextTextMapPropagator()
_setup_lock = threading.Lock()
_set_up = False


def sampled(rate: float) -> bool:
    """Whether to trace one run at ``rate``."""
    return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


def ensure_provider() -> None:
    """Install a tracer provider from ``OTEL_*`` unless the program has its own."""
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        _set_up = True
        # Lazy: the OpenTelemetry SDK and its exporters load only when tracing is on.
        from opentelemetry.sdk.trace import TracerProvider

        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return  # the program set one up
        exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        if exporter_name == "none":
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = _exporter(exporter_name)
        if exporter is None:
            return
        provider = TracerProvider(
            resource=Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME", "nodegraph")}
            )
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)


def _exporter(name: str) -> Any:
    # Lazy: only the configured exporter loads; the OTLP ones are optional packages.
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        try:
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
        except ImportError:
            logger.warning(
                "tracing: OTEL_TRACES_EXPORTER=otlp needs the opentelemetry-exporter-otlp "
                "package; no spans are exported (set OTEL_TRACES_EXPORTER=console, or "
                "install it)"
            )
            return None
        return OTLPSpanExporter()
    logger.warning("tracing: unknown OTEL_TRACES_EXPORTER %r; no spans are exported", name)
    return None


_tracers: dict[int, trace.Tracer] = {}


def tracer() -> trace.Tracer:
    """nodegraph's tracer from the current provider (kept per provider: getting one
    builds an instrumentation scope each time)."""
    provider = trace.get_tracer_provider()
    found = _tracers.get(id(provider))
    if found is None:
        found = _tracers[id(provider)] = provider.get_tracer(TRACER_NAME)
    return found


def carrier(span: trace.Span) -> dict[str, str]:
    """The W3C ``traceparent`` of ``span``, to hand to a worker."""
    found: dict[str, str] = {}
    _propagator.inject(found, context=trace.set_span_in_context(span))
    return found


@contextmanager
def current_from(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Make the span named by ``headers`` current for the block (in a worker)."""
    if not headers:
        yield
        return
    token = otel_context.attach(_propagator.extract(dict(headers)))
    try:
        yield
    finally:
        otel_context.detach(token)
