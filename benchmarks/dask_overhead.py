"""nodegraph's distributed strategy against stock prefect-dask, and the parallel
speedup on CPU-bound nodes.

    python benchmarks/dask_overhead.py [--repeat 3] [--workers 2] [--nodes 200]

1. **Per-node overhead.** A fan-out/fan-in of ``--nodes`` trivial nodes (200 by
   default) on one 2-worker ``LocalCluster`` (started once, outside the timings), run
   two ways: nodegraph's ``distributed`` strategy, and a hand-written flow on stock
   ``DaskTaskRunner`` with one task per node. It prints the median flow time of each,
   the time per node (µs), and the ratio stock/nodegraph.
2. **Speedup.** Eight independent nodes spinning pure Python (holding the GIL) for
   about 0.5 s each: ``sequential`` against ``distributed`` on a 2-worker cluster
   (``--spin-threads`` threads each: with several, one node's Prefect bookkeeping
   overlaps another's work), and ``parallel`` with processes.

Both sides talk to the same Prefect API; use a persistent server (``PREFECT_API_URL``)
for stable numbers. The cache is off: every run executes every node.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import distributed  # noqa: E402
import graphs  # noqa: E402
from overhead import settle  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

import integration  # noqa: E402
from integration.config import ExecutionConfig, NodegraphConfig  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402

SPIN_NODES = 8
SPIN_SECONDS = 0.5


def stock_fan(address: str, width: int) -> Any:
    inc = task(graphs._inc, name="inc")
    gather = task(graphs._gather, name="gather")

    @flow(name="stock-dask-fan", task_runner=DaskTaskRunner(address=address))
    def fan() -> int:
        source = inc.submit(0)
        branches = [inc.submit(source) for _ in range(width)]
        return gather.submit(branches).result()

    def run() -> tuple[int, str]:
        state = fan(return_state=True)
        return state.result(), str(state.state_details.flow_run_id)

    return run


def spin_doc(iterations: int) -> dict[str, Any]:
    nodes = [
        {"id": f"spin{i}", "type": "bench.spin", "params": {"iterations": iterations, "seed": i}}
        for i in range(SPIN_NODES)
    ]
    return {"name": "spin-8", "nodes": nodes}


def calibrate(seconds: float) -> int:
    """Iterations of ``bench.spin`` that take about ``seconds`` on one core here."""
    from bench import spin  # type: ignore[import-not-found]

    probe = 2_000_000
    start = time.perf_counter()
    spin.fn(iterations=probe)
    return int(probe * seconds / (time.perf_counter() - start))


def local_cluster(workers: int, threads: int) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def cluster_config(cluster: distributed.LocalCluster) -> NodegraphConfig:
    """nodegraph on ``cluster``, without type tags (stock tasks carry none)."""
    return NodegraphConfig(
        execution=ExecutionConfig(
            dask_address=cluster.scheduler_address, tag_node_types=False, fusion="off"
        )
    )


def timed(run: Any, repeat: int, tasks: int) -> tuple[float, Any]:
    """Median seconds of ``run()`` (which returns ``(value, flow run id)``); between
    runs, wait until the server has stored every task run of the last one."""
    settle(run()[1], tasks)  # warm-up: registers the flow, imports on the workers
    samples, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value, flow_run_id = run()
        samples.append(time.perf_counter() - start)
        settle(flow_run_id, tasks)
    return statistics.median(samples), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument(
        "--spin-threads", type=int, default=4, help="threads per worker, speedup case"
    )
    parser.add_argument("--nodes", type=int, default=200, help="nodes in the fan")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    graphs.register_fan_sink(registry, args.nodes)
    rows: dict[str, Any] = {}
    with local_cluster(args.workers, args.threads) as cluster:
        config = cluster_config(cluster)
        fan = graphs.fan_doc(args.nodes)

        def ours() -> tuple[int, str]:
            result = integration.run(
                fan, strategy="distributed", registry=registry, config=config, cache=False
            )
            assert result.ok, result.errors
            return result.outputs["result"], result.flow_run_id

        nodes = len(fan["nodes"])
        ours_s, ours_value = timed(ours, args.repeat, nodes)
        stock = stock_fan(cluster.scheduler_address, nodes - 2)
        stock_s, stock_value = timed(stock, args.repeat, nodes)
        assert ours_value == stock_value, (ours_value, stock_value)
        rows["overhead"] = {
            "nodes": nodes,
            "stock_flow_s": stock_s,
            "nodegraph_flow_s": ours_s,
            "stock_ms_per_node": 1000 * stock_s / nodes,
            "nodegraph_ms_per_node": 1000 * ours_s / nodes,
            "stock_us_per_node": 1e6 * stock_s / nodes,
            "nodegraph_us_per_node": 1e6 * ours_s / nodes,
            "stock_over_nodegraph": stock_s / ours_s,
        }
        print(
            f"{nodes}-node fan on {args.workers} workers x {args.threads} threads: stock "
            f"{stock_s:.2f} s ({1e6 * stock_s / nodes:.0f} µs/node), nodegraph {ours_s:.2f} s "
            f"({1e6 * ours_s / nodes:.0f} µs/node), stock/nodegraph {stock_s / ours_s:.1f}x",
            flush=True,
        )

    # A fresh cluster, so that the fan's leftovers do not weigh on the speedup.
    with local_cluster(args.workers, args.spin_threads) as cluster:
        sys.path.insert(0, str(HERE / "nodes"))
        spin = spin_doc(calibrate(SPIN_SECONDS))
        spin_config = cluster_config(cluster)
        times = {}
        for label, strategy, processes in (
            ("sequential", "sequential", False),
            ("distributed", "distributed", False),
            ("processes", "parallel", True),
        ):

            def spin_run(strategy: str = strategy, processes: bool = processes) -> tuple[None, str]:
                result = integration.run(
                    spin,
                    strategy=strategy,
                    processes=processes,
                    max_workers=args.workers,
                    registry=registry,
                    config=spin_config,
                    cache=False,
                )
                assert result.ok, result.errors
                return None, result.flow_run_id

            times[label] = timed(spin_run, args.repeat, SPIN_NODES)[0]
        rows["speedup"] = {
            "sequential_s": times["sequential"],
            "distributed_s": times["distributed"],
            "processes_s": times["processes"],
            "distributed_speedup": times["sequential"] / times["distributed"],
            "processes_speedup": times["sequential"] / times["processes"],
        }
        print(
            f"{SPIN_NODES} x {SPIN_SECONDS} s spin: sequential {times['sequential']:.2f} s, "
            f"distributed {times['distributed']:.2f} s "
            f"({rows['speedup']['distributed_speedup']:.2f}x), processes "
            f"{times['processes']:.2f} s ({rows['speedup']['processes_speedup']:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
