"""Resources: what a node needs, what a machine or cluster offers, and the GPUs.

    >>> from integration.resources import ResourceRequirement, ResourcePool
    >>> pool = ResourcePool({"cpu_cores": 2})
    >>> need = ResourceRequirement(cpu_cores=1)
    >>> pool.reserve(need), pool.reserve(need), pool.can_schedule(need)
    (True, True, False)

No Prefect and no Dask here: the translator maps requirements onto Dask annotations,
and the local strategies gate submission with a ``ResourcePool``.
"""

from integration.resources.gpus import GpuInfo, discover_gpus
from integration.resources.pool import ResourcePool, local_capacity
from integration.resources.requirements import RESOURCE_NAMES, ResourceRequirement

__all__ = [
    "RESOURCE_NAMES",
    "GpuInfo",
    "ResourcePool",
    "ResourceRequirement",
    "discover_gpus",
    "local_capacity",
]
