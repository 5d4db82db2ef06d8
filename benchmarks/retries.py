"""The cost of retries: a 200-node graph in which 10% of the nodes fail once.

    python benchmarks/retries.py [--repeat 3] [--delay 0]

Shape: the 200-node fan-out/fan-in of ``overhead.py`` built from ``bench.flaky_inc``.
Every tenth branch (20 nodes) raises ``ConnectionError`` on its first attempt and
succeeds on its retry (policy ``retry: {attempts: 1, delay_seconds: DELAY}``). The
baseline is the same graph, with the same policy, where nothing fails. Runs alternate
between the two and wait for the server to store every task run, as in
``overhead.py``; the cache is off, so every run executes every node.

The ratio failing/baseline is expected near 1.0 plus the configured delays: 20 x DELAY
sequentially, about DELAY with the parallel strategy, where the retries overlap.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import graphs  # noqa: E402
from overhead import Sample, measure_pair  # noqa: E402

import integration  # noqa: E402
from integration.config import ExecutionConfig, NodegraphConfig  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402

FAILING_EVERY = 10


def flaky_fan_doc(delay: float) -> dict[str, Any]:
    doc = graphs.fan_doc()
    doc["name"] = "fan-200-retries"
    policy = {"retry": {"attempts": 1, "delay_seconds": delay}}
    for node in doc["nodes"]:
        if node["type"] == "bench.inc":
            node["type"] = "bench.flaky_inc"
            node["on_error"] = policy
    return doc


def runner(
    delay: float, failing: bool, strategy: str, registry: NodeRegistry, config: NodegraphConfig
):
    def run() -> Sample:
        doc = flaky_fan_doc(delay)
        if failing:  # fresh tokens: every run fails once per flagged node
            nonce = uuid.uuid4().hex
            for i, node in enumerate(doc["nodes"][1:-1]):
                if i % FAILING_EVERY == 0:
                    node["params"] = {"fail_token": f"{nonce}-{i}"}
        result = integration.run(
            doc, strategy=strategy, registry=registry, config=config, cache=False
        )
        if not result.ok:
            raise SystemExit(f"run failed: {result.errors}")
        retried = sum(r.attempts > 1 for r in result.nodes.values())
        if retried != (20 if failing else 0):
            raise SystemExit(f"expected 20 retried nodes, got {retried}")
        return result.outputs["result"], result.duration_s, result.flow_run_id

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0, help="retry delay, seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.ERROR)
    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    config = NodegraphConfig(execution=ExecutionConfig(tag_node_types=False, fusion="off"))
    rows = []
    print(
        f"{'strategy':10} {'clean flow':>10} {'retry flow':>10} {'ratio':>6}"
        f"  (retry delay {args.delay} s)"
    )
    for strategy in ("sequential", "parallel"):
        clean = runner(args.delay, False, strategy, registry, config)
        failing = runner(args.delay, True, strategy, registry, config)
        clean_m, failing_m = measure_pair(clean, failing, 200, args.repeat)
        row = {
            "strategy": strategy,
            "delay_s": args.delay,
            "clean_flow_s": clean_m["flow_s"],
            "retry_flow_s": failing_m["flow_s"],
            "ratio": failing_m["flow_s"] / clean_m["flow_s"],
        }
        rows.append(row)
        print(
            f"{strategy:10} {row['clean_flow_s']:10.3f} {row['retry_flow_s']:10.3f} "
            f"{row['ratio']:6.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
