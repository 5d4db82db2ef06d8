"""Prometheus metrics of runs, nodes, the cache and the machine.

    >>> from integration.observability.metrics import NODE_EXECUTIONS, REGISTRY
    >>> NODE_EXECUTIONS.labels(node_type="core.add", status="completed").inc()
    >>> REGISTRY.get_sample_value(
    ...     "node_executions_total", {"node_type": "core.add", "status": "completed"}
    ... ) >= 1
    True

The metrics live in their own registry (``REGISTRY``), served on
``monitoring.metrics_port`` by ``serve_metrics``. Node metrics are recorded by the
process that runs the flow, from the reports that come back from wherever nodes ran;
``resource_usage_percent`` is sampled on each scrape, for the machine serving it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from integration.resources import gpus as gpu_discovery

logger = logging.getLogger("nodegraph.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

NODE_DURATION = Histogram(
    "node_execution_duration_seconds",
    "Wall time of node functions, by node type and final state.",
    ["node_type", "status"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800),
)
NODE_EXECUTIONS = Counter(
    "node_executions",
    "Nodes that ended, by node type and final state (completed, cached, failed, ...).",
    ["node_type", "status"],
    registry=REGISTRY,
)
NODES_IN_FLIGHT = Gauge(
    "nodes_in_flight", "Nodes submitted and not yet finished.", registry=REGISTRY
)
CACHE_HITS = Counter(
    "cache_hits",
    "Cache look-ups answered, by the tier that held the entry.",
    ["tier"],
    registry=REGISTRY,
)
CACHE_MISSES = Counter("cache_misses", "Cache look-ups no tier could answer.", registry=REGISTRY)
CACHE_READ_BYTES = Counter(
    "cache_read_bytes", "Bytes read from the cache, by tier.", ["tier"], registry=REGISTRY
)
CACHE_WRITTEN_BYTES = Counter(
    "cache_written_bytes", "Bytes written to the cache, by tier.", ["tier"], registry=REGISTRY
)
CACHE_TIER_ERRORS = Counter(
    "cache_tier_errors", "Failed operations on a cache tier.", ["tier"], registry=REGISTRY
)
RUNS = Counter("graph_runs", "Graph runs that ended, by state.", ["state"], registry=REGISTRY)


class ResourceCollector(Collector):
    """``resource_usage_percent``: CPU and memory (psutil), and GPU load and GPU memory
    (pynvml, where NVIDIA GPUs are present), read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "resource_usage_percent",
            "Machine resource use in percent, by resource type.",
            labels=["resource_type"],
        )
        try:
            family.add_metric(["cpu"], psutil.cpu_percent(interval=None))
            family.add_metric(["memory"], psutil.virtual_memory().percent)
        except Exception as exc:  # a scrape never fails for want of a number
            logger.debug("resource sampling failed: %s", exc)
        for kind, value in _gpu_usage():
            family.add_metric([kind], value)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def _gpu_usage() -> list[tuple[str, float]]:
    try:
        # Through the module: the same discovery placement uses, replaceable in tests.
        gpus = gpu_discovery.discover_gpus()
    except Exception:
        return []
    if not gpus:
        return []
    load = sum(g.utilization_percent for g in gpus) / len(gpus)
    total = sum(g.memory_total_mb for g in gpus)
    used = sum(g.memory_used_mb for g in gpus)
    samples = [("gpu", float(load))]
    if total:
        samples.append(("gpu_memory", 100.0 * used / total))
    return samples


REGISTRY.register(ResourceCollector())

_servers: dict[tuple[str, int], Any] = {}
_servers_lock = threading.Lock()


def serve_metrics(port: int, address: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``address:port`` from this process (once per port); the
    port actually bound (``0`` picks a free one)."""
    with _servers_lock:
        for (bound_address, bound_port), _ in _servers.items():
            if bound_address == address and port in (bound_port, 0):
                return bound_port
        server, _thread = start_http_server(port, addr=address, registry=REGISTRY)
        bound = server.server_address[1]
        _servers[(address, bound)] = server
        logger.info("serving metrics on http://%s:%d/metrics", address, bound)
        return bound


def record_node(node_type: str, status: str, duration_s: float | None) -> None:
    """Count a finished node and observe its time (nodes that ran have one)."""
    NODE_EXECUTIONS.labels(node_type=node_type, status=status).inc()
    if duration_s is not None:
        NODE_DURATION.labels(node_type=node_type, status=status).observe(duration_s)
