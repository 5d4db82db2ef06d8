"""A short check for a machine with NVIDIA GPUs: pynvml, dask-cuda and GPU placement.

    python benchmarks/gpu_check.py

1. pynvml finds the GPUs, with their memory and utilisation.
2. A graph of 2 x (number of GPUs) ``bench.gpu_probe`` nodes, each declaring
   ``gpu_count: 1``, runs with the ``distributed`` strategy on ``LocalCUDACluster``
   (one worker per GPU, which nodegraph picks when pynvml finds GPUs).
3. Placement: every node ran on a dask-cuda worker whose ``CUDA_VISIBLE_DEVICES``
   starts with its own GPU, NVML inside the node sees that GPU first, and no two GPU
   nodes overlapped on one GPU.

It prints one line per check and ends with ``gpu_check: PASS`` or ``gpu_check: FAIL``
(exit code 0 or 1). It needs the ``gpu`` extra and takes well under 3 minutes with one
GPU (most of it starting Prefect's temporary server and the cluster).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> int:
    started = time.monotonic()
    checks: list[tuple[str, bool, str]] = []

    from integration.resources import discover_gpus

    gpus = discover_gpus()
    checks.append(
        (
            "pynvml finds GPUs",
            bool(gpus) and all(g.memory_total_mb > 0 for g in gpus),
            "; ".join(
                f"{g.index}: {g.name}, {g.memory_total_mb:.0f} MB total, "
                f"{g.memory_used_mb:.0f} MB used, {g.utilization_percent:.0f}% busy"
                for g in gpus
            )
            or "none",
        )
    )
    if not gpus:
        return report(checks, started)

    from integration.observability.metrics import ResourceCollector

    (family,) = ResourceCollector().collect()
    usage = {sample.labels["resource_type"]: sample.value for sample in family.samples}
    checks.append(
        (
            "resource_usage_percent reports gpu and gpu_memory",
            {"cpu", "memory", "gpu", "gpu_memory"} <= set(usage),
            ", ".join(f"{k} {v:.1f}%" for k, v in sorted(usage.items())),
        )
    )

    import integration
    from integration.config import ExecutionConfig, NodegraphConfig
    from integration.graph import NodeRegistry
    from integration.prefect.runners import DaskSettings

    settings = DaskSettings(gpus="auto")
    cluster_class, _ = settings.cluster()
    checks.append(
        (
            "the distributed strategy picks LocalCUDACluster",
            cluster_class.__name__ == "LocalCUDACluster",
            f"{cluster_class.__module__}.{cluster_class.__name__}, {settings.worker_count()} "
            f"worker(s) offering {settings.worker_offer()}",
        )
    )
    nodes = [
        {"id": f"gpu{i}", "type": "bench.gpu_probe", "params": {"index": i, "seconds": 0.5}}
        for i in range(2 * len(gpus))
    ]
    result = integration.run(
        {"name": "gpu-check", "nodes": nodes},
        strategy="distributed",
        registry=NodeRegistry.default(extra_paths=[HERE / "nodes"]),
        config=NodegraphConfig(execution=ExecutionConfig(gpus="auto")),
        cache=False,
    )
    checks.append(("the graph ran", result.ok, f"{result.state}; errors: {result.errors}"))
    probes = [result.outputs[f"gpu{i}.out"] for i in range(len(nodes))] if result.ok else []
    by_uuid = {g.uuid: g.index for g in gpus}
    own_gpu = []
    for probe in probes:
        visible = (probe["cuda_visible_devices"] or "").split(",")
        first_seen = probe["gpus_seen"][0] if probe["gpus_seen"] else None
        own_gpu.append(bool(visible[0]) and first_seen in by_uuid)
    checks.append(
        (
            "each GPU node sees its own CUDA_VISIBLE_DEVICES and GPU",
            bool(probes) and all(own_gpu),
            "; ".join(
                f"{p['index']}: worker {p['worker']}, CUDA_VISIBLE_DEVICES="
                f"{p['cuda_visible_devices']}, NVML sees {p['gpus_seen'][:1]}"
                for p in probes
            ),
        )
    )
    overlaps = 0
    for gpu in {(p["cuda_visible_devices"] or "").split(",")[0] for p in probes}:
        spans = sorted(
            (p["start"], p["end"]) for p in probes if p["cuda_visible_devices"].split(",")[0] == gpu
        )
        overlaps += sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
    checks.append(
        ("one node per GPU at a time", bool(probes) and overlaps == 0, f"{overlaps} overlaps")
    )
    return report(checks, started)


def report(checks: list[tuple[str, bool, str]], started: float) -> int:
    for name, ok, detail in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    passed = all(ok for _, ok, _ in checks)
    print(f"gpu_check: {'PASS' if passed else 'FAIL'} in {time.monotonic() - started:.1f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    logging.getLogger("distributed").setLevel(logging.ERROR)
    sys.exit(main())
