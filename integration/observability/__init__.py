"""Observability: Prometheus metrics, OpenTelemetry traces and per-node profiles.

- ``metrics``: the metrics registry, ``/metrics`` serving and resource sampling.
- ``tracing``: tracer set-up from ``monitoring.trace_sampling_rate`` and ``OTEL_*``.
- ``profile``: what each node cost, and the run's critical path.
- ``measure``: measuring one node where it runs (CPU time, peak memory, output size).
- ``instruments``: the run-side glue the engine calls as nodes start and finish.

Where nodes run in other processes (the process pool, Dask workers), the worker
measures its node and the numbers travel back with the node's result; the process that
runs the flow records metrics and spans from them. So one ``/metrics`` port and one
trace exporter see every node, whatever the strategy (aggregation, not Prometheus
multiprocess mode, which cannot reach remote Dask workers).

Nothing here imports Prefect.
"""
