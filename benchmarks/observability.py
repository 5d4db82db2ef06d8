"""The cost of full instrumentation on the 200-node graphs of ``overhead.py``.

    python benchmarks/observability.py [--repeat 5]

Runs the 200-node chain and the 200-node fan-out/fan-in (trivial nodes, sequential and
parallel) twice each way, alternating:

- ``off``: no metrics, no tracing, no profiling (the defaults);
- ``full``: ``/metrics`` served, every run traced (``trace_sampling_rate: 1.0``, spans
  to an in-memory exporter, so export costs nothing but the spans themselves) and
  every node profiled (CPU time, tracemalloc peak, output size).

It reports the median flow-body time (``RunResult.duration_s``) of each and the ratio
full/off; the target is at most 1.10. Between runs it waits until the Prefect server
has stored the previous run (as ``overhead.py`` does), so server backlogs do not leak
into the next measurement. Use a persistent server (``PREFECT_API_URL``).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import graphs  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from overhead import settle  # noqa: E402

import integration  # noqa: E402
from integration.config import ExecutionConfig, MonitoringConfig, NodegraphConfig  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    execution = ExecutionConfig(tag_node_types=False, fusion="off")
    configs = {
        "off": NodegraphConfig(execution=execution),
        "full": NodegraphConfig(
            execution=execution,
            monitoring=MonitoringConfig(metrics_port=0, trace_sampling_rate=1.0, profile=True),
        ),
    }
    print(f"{'shape':6} {'strategy':10} {'off':>9} {'full':>9} {'ratio':>6}")
    ratios = []
    for shape, doc in (("chain", graphs.chain_doc(200)), ("fan", graphs.fan_doc())):
        for strategy in ("sequential", "parallel"):
            times: dict[str, list[float]] = {"off": [], "full": []}
            for round_ in range(args.repeat + 1):  # the first pair warms up and is dropped
                order = list(configs.items())
                if round_ % 2:
                    order.reverse()  # neither side always runs after the other
                for name, config in order:
                    result = integration.run(
                        doc, strategy=strategy, registry=registry, config=config, cache=False
                    )
                    if not result.ok:
                        raise SystemExit(f"run failed: {result.errors}")
                    if result.flow_run_id:
                        settle(result.flow_run_id, len(result.nodes))
                    times[name].append(result.duration_s or 0.0)
                    exporter.clear()
            off = statistics.median(times["off"][1:])
            full = statistics.median(times["full"][1:])
            ratios.append(full / off)
            line = f"{shape:6} {strategy:10} {off * 1000:8.0f}ms {full * 1000:8.0f}ms"
            print(f"{line} {full / off:6.2f}")
    print(f"worst ratio full/off: {max(ratios):.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
