"""Where nodes may run: resource checks before a run, and what gates or places them.

    >>> # pool, dask_resources = place(plan, "parallel", settings, resource_management)

Before anything runs, every node's ``ResourceRequirement`` is checked against what the
strategy offers: the local pool (sequential, parallel) or one worker of the cluster
(distributed). A node that could never run is a ``GraphValidationError`` naming the
node and the resource. The result is the ``ResourcePool`` that gates local submission,
or the Dask resources each node's submit asks for.
"""

from __future__ import annotations

from collections.abc import Mapping

from integration.config import ResourceManagementConfig
from integration.graph.validate import GraphValidationError, Problem
from integration.plan import Plan
from integration.prefect.runners import DaskSettings
from integration.resources import ResourcePool, ResourceRequirement, local_capacity

NO_GPU_HINT = (
    "; no GPU was found here (pynvml): run it on a cluster with GPU workers "
    "(--strategy distributed --address tcp://...)"
)


def place(
    plan: Plan,
    strategy: str,
    dask: DaskSettings | None,
    resource_management: ResourceManagementConfig | None,
) -> tuple[ResourcePool | None, dict[str, dict[str, float]]]:
    """The local pool (local strategies) or each node's Dask resources (distributed)."""
    needs = plan.resource_needs()
    if not needs:
        return None, {}
    if strategy == "distributed":
        offers = cluster_offers(dask or DaskSettings())
        _raise_problems(plan, {n: _cluster_problems(need, offers) for n, need in needs.items()})
        return None, {n: need.dask_resources() for n, need in needs.items()}
    rm = resource_management or ResourceManagementConfig()
    pool = ResourcePool(local_capacity(rm.capacity_overrides()))
    problems = {}
    for node_id, need in needs.items():
        found = pool.problems(need)
        if found and need.gpu_count and not pool.capacity.get("gpu_count"):
            found[-1] += NO_GPU_HINT
        problems[node_id] = found
    _raise_problems(plan, problems)
    return pool, {}


def cluster_offers(dask: DaskSettings) -> list[dict[str, float]]:
    """The Dask resources each worker offers: asked of the scheduler for an existing
    cluster, or what a local cluster's workers will advertise."""
    if not dask.address:
        return [dask.worker_offer()]
    # Lazy: Dask takes about 0.4 s to import; only an existing cluster is asked.
    import distributed

    with distributed.Client(dask.address, timeout=30, set_as_default=False) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return [dict(worker.get("resources") or {}) for worker in workers]


def _cluster_problems(need: ResourceRequirement, offers: list[dict[str, float]]) -> list[str]:
    wanted = need.dask_resources()
    if any(
        all(offer.get(name, 0) >= amount for name, amount in wanted.items()) for offer in offers
    ):
        return []
    advertised = sorted({name for offer in offers for name in offer})
    message = (
        f"needs {_dask_text(wanted)}, but no worker offers that much "
        f"(workers advertise: {', '.join(advertised) or 'nothing'})"
    )
    if need.gpu_count and not any(offer.get("GPU") for offer in offers):
        message += NO_GPU_HINT
    return [message]


def _dask_text(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in resources.items())


def _raise_problems(plan: Plan, problems: Mapping[str, list[str]]) -> None:
    found = [
        Problem(node_id, "insufficient_resources", message)
        for node_id, messages in problems.items()
        for message in messages
    ]
    if found:
        types = {n: plan.steps[n].node.type.qualified_name for n in plan.order}
        raise GraphValidationError(plan.name, found, types)
