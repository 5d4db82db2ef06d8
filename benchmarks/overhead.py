"""nodegraph's overhead against hand-written raw Prefect, on trivial nodes.

    python benchmarks/overhead.py [--repeat 5] [--nodes 200]

Shapes: a chain and a fan-out/fan-in of ``--nodes`` nodes each (200 by default; at
10,000 one task per node takes minutes a run). Strategies: sequential (direct
task calls) and parallel (ThreadPoolTaskRunner). Both sides run in this one process
against the same Prefect API. For each cell it reports the median of (in seconds, and
in µs per node for the flow):

- ``flow``: the whole flow call, as a user waits for it;
- ``body``: the flow body alone (submitting and running the tasks), the part the
  translator can make slower or faster.

Ratios are nodegraph / raw; the target is <= 1.2. Raw and nodegraph runs alternate,
and between runs the benchmark waits until the Prefect server has stored every task
run of the previous run, so that one run's backlog of events does not land in the
next run's time and both sides meet the same server conditions.

Two variants: ``untagged`` compares plain tasks; ``tagged`` tags every task run with
its node type on both sides (nodegraph's default). Prefect asks the server for tag
concurrency slots for every tagged task run, so the tagged variant also measures the
server's latency, which varies with its load.

Without PREFECT_API_URL, Prefect's temporary local server starts first (not timed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import graphs  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402

import integration  # noqa: E402
from integration.config import ExecutionConfig, NodegraphConfig  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402

Sample = tuple[Any, float, str]  # (value, body seconds, flow run id)


def settle(flow_run_id: str, expected_tasks: int, limit_s: float = 120.0) -> None:
    """Wait until the server has stored every task run of ``flow_run_id``."""
    deadline = time.monotonic() + limit_s
    body = {
        "flow_runs": {"id": {"any_": [flow_run_id]}},
        "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if client.request("POST", "/task_runs/count", json=body).json() >= expected_tasks:
                return
            time.sleep(0.2)
    print(f"warning: server still behind after {limit_s}s", file=sys.stderr)


def measure_pair(
    raw: Callable[[], Sample], ours: Callable[[], Sample], tasks: int, repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate raw and nodegraph runs, so both meet the same server conditions."""
    samples: dict[str, dict[str, list[float]]] = {
        side: {"flow": [], "body": []} for side in ("raw", "ours")
    }
    values: dict[str, Any] = {}
    for run in (raw, ours):
        settle(run()[2], tasks)  # warm-up: registers the flow, fills caches
    for _ in range(repeat):
        for side, run in (("raw", raw), ("ours", ours)):
            start = time.perf_counter()
            value, body, flow_run_id = run()
            samples[side]["flow"].append(time.perf_counter() - start)
            samples[side]["body"].append(body)
            values[side] = value
            settle(flow_run_id, tasks)
    return tuple(  # type: ignore[return-value]
        {
            "value": values[side],
            "flow_s": statistics.median(samples[side]["flow"]),
            "body_s": statistics.median(samples[side]["body"]),
        }
        for side in ("raw", "ours")
    )


def raw_runner(flow: Any, *args: Any) -> Callable[[], Sample]:
    def run() -> Sample:
        state = flow(*args, return_state=True)
        value, body = state.result()
        return value, body, str(state.state_details.flow_run_id)

    return run


def nodegraph_runner(
    doc: dict[str, Any], strategy: str, registry: NodeRegistry, config: NodegraphConfig
) -> Callable[[], Sample]:
    def run() -> Sample:
        # The cache would serve every repeat; this measures running, not reading results.
        result = integration.run(
            doc, strategy=strategy, registry=registry, config=config, cache=False
        )
        if not result.ok:
            raise SystemExit(f"nodegraph run failed: {result.errors}")
        return result.outputs["result"], result.duration_s, result.flow_run_id

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=200, help="nodes in each graph")
    parser.add_argument("--variant", choices=["tagged", "untagged", "both"], default="both")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    graphs.register_fan_sink(registry, args.nodes)
    chain, fan = graphs.chain_doc(args.nodes), graphs.fan_doc(args.nodes)
    variants = ["tagged", "untagged"] if args.variant == "both" else [args.variant]
    rows = []
    header = (
        f"{'variant':9} {'shape':6} {'strategy':10} {'raw flow':>9} {'ng flow':>9} {'ratio':>6}"
    )
    print(header + f" {'raw body':>9} {'ng body':>9} {'ratio':>6} {'raw µs/n':>9} {'ng µs/n':>9}")
    for variant in variants:
        tagged = variant == "tagged"
        raw = graphs.RawFlows(tagged=tagged, width=args.nodes - 2)
        config = NodegraphConfig(execution=ExecutionConfig(tag_node_types=tagged, fusion="off"))
        cases = [
            ("chain", "sequential", chain, raw_runner(raw.chain_sequential, args.nodes)),
            ("chain", "parallel", chain, raw_runner(raw.chain_parallel, args.nodes)),
            ("fan", "sequential", fan, raw_runner(raw.fan_sequential)),
            ("fan", "parallel", fan, raw_runner(raw.fan_parallel)),
        ]
        for shape, strategy, doc, raw_run in cases:
            tasks = len(doc["nodes"])
            ours = nodegraph_runner(doc, strategy, registry, config)
            raw_m, ours_m = measure_pair(raw_run, ours, tasks, args.repeat)
            if raw_m["value"] != ours_m["value"]:
                raise SystemExit(f"{shape}/{strategy}: raw {raw_m['value']} != {ours_m['value']}")
            row = {
                "variant": variant,
                "shape": shape,
                "strategy": strategy,
                "nodes": tasks,
                "raw_flow_s": raw_m["flow_s"],
                "nodegraph_flow_s": ours_m["flow_s"],
                "flow_ratio": ours_m["flow_s"] / raw_m["flow_s"],
                "raw_body_s": raw_m["body_s"],
                "nodegraph_body_s": ours_m["body_s"],
                "body_ratio": ours_m["body_s"] / raw_m["body_s"],
            }
            rows.append(row)
            print(
                f"{variant:9} {shape:6} {strategy:10} {row['raw_flow_s']:9.3f} "
                f"{row['nodegraph_flow_s']:9.3f} {row['flow_ratio']:6.2f} "
                f"{row['raw_body_s']:9.3f} {row['nodegraph_body_s']:9.3f} "
                f"{row['body_ratio']:6.2f} {row['raw_flow_s'] / tasks * 1e6:9.0f} "
                f"{row['nodegraph_flow_s'] / tasks * 1e6:9.0f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
