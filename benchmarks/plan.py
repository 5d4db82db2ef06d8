"""Load, validate and plan generated graphs of 1,000 and 10,000 nodes.

    python benchmarks/plan.py [--repeat 5] [--nodes 1000 10000]

Shapes: a chain, and a layered random DAG (50 nodes a layer, two inputs a node). Each
stage is timed from JSON text: ``load`` (parse + pydantic), ``bind`` (registry lookup,
port and type checks, Kahn's order) and ``plan`` (output selection and levels). The
best of ``--repeat`` runs is reported, in seconds and in µs per node. Target: load +
bind + plan <= 0.5 s at 10,000 nodes. ``--nodes`` (or ``--sizes``) takes the sizes.
Nothing here recurses, so the chains cannot hit Python's recursion limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import graphs  # noqa: E402

from integration.graph import NodeRegistry, bind, parse_graph_text  # noqa: E402
from integration.plan import make_plan  # noqa: E402


def stages(text: str, registry: NodeRegistry) -> dict[str, float]:
    t0 = time.perf_counter()
    graph = parse_graph_text(text, "generated.json")
    t1 = time.perf_counter()
    bound = bind(graph, registry)
    t2 = time.perf_counter()
    plan = make_plan(bound)
    t3 = time.perf_counter()
    assert len(plan.order) == len(graph.nodes)
    return {"load_s": t1 - t0, "bind_s": t2 - t1, "plan_s": t3 - t2, "total_s": t3 - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--nodes", "--sizes", dest="sizes", type=int, nargs="+", default=[1_000, 10_000]
    )
    args = parser.parse_args()

    start = time.perf_counter()
    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    print(f"registry: {len(registry)} node types loaded in {time.perf_counter() - start:.3f} s")
    print(
        f"{'shape':6} {'nodes':>6} {'load s':>8} {'bind s':>8} {'plan s':>8} {'total s':>8}"
        f" {'load µs':>8} {'bind µs':>8} {'plan µs':>8} {'total µs':>9} (per node)"
    )
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        docs = {"chain": graphs.chain_doc(size), "dag": graphs.layered_dag_doc(size)}
        for shape, doc in docs.items():
            text = json.dumps(doc)
            runs = [stages(text, registry) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["total_s"])
            rows.append({"shape": shape, "nodes": size, **best})
            per_node = [best[k] / size * 1e6 for k in ("load_s", "bind_s", "plan_s", "total_s")]
            print(
                f"{shape:6} {size:6} {best['load_s']:8.3f} {best['bind_s']:8.3f} "
                f"{best['plan_s']:8.3f} {best['total_s']:8.3f} {per_node[0]:8.1f} "
                f"{per_node[1]:8.1f} {per_node[2]:8.1f} {per_node[3]:9.1f}",
                flush=True,
            )
    worst = max(r["total_s"] for r in rows if r["nodes"] == max(args.sizes))
    print(f"slowest at {max(args.sizes)} nodes: {worst:.3f} s (target <= 0.5 s)")


if __name__ == "__main__":
    main()
