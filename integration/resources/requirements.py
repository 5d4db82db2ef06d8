"""What one node needs to run: ``ResourceRequirement``.

    >>> ResourceRequirement(gpu_count=1, memory_mb=8000).dask_resources()
    {'MEMORY': 8000000000.0, 'GPU': 1.0}

A node type declares it (``@node(resources={"gpu_count": 1})``) and a node in a
document overrides it (``resources:``). Amounts left at zero are not needed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

RESOURCE_NAMES: dict[str, tuple[str, float]] = {
    "cpu_cores": ("CPU", 1.0),
    "memory_mb": ("MEMORY", 1e6),
    "gpu_count": ("GPU", 1.0),
    "gpu_memory_mb": ("GPU_MEMORY", 1e6),
    "disk_space_mb": ("DISK", 1e6),
    "network_bandwidth_mbps": ("NETWORK", 1.0),
}
"""Each field's Dask resource name (what ``dask worker --resources`` advertises) and
the factor from the field's unit to the Dask amount: memory and disk are in bytes."""


class ResourceRequirement(BaseModel):
    """Resources one running instance of a node holds, following the seed document."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cpu_cores: float = Field(default=0, ge=0, description="CPU cores.")
    memory_mb: float = Field(default=0, ge=0, description="Memory, MB.")
    gpu_count: float = Field(default=0, ge=0, description="GPUs (fractions share one).")
    gpu_memory_mb: float = Field(default=0, ge=0, description="GPU memory, MB.")
    disk_space_mb: float = Field(default=0, ge=0, description="Scratch disk, MB.")
    network_bandwidth_mbps: float = Field(default=0, ge=0, description="Network, Mbit/s.")

    def amounts(self) -> dict[str, float]:
        """The non-zero amounts, by field name."""
        return {name: value for name, value in self.model_dump().items() if value}

    @property
    def empty(self) -> bool:
        return not self.amounts()

    def dask_resources(self) -> dict[str, float]:
        """The amounts as Dask resources, for ``dask.annotate(resources=...)``."""
        return {
            RESOURCE_NAMES[name][0]: value * RESOURCE_NAMES[name][1]
            for name, value in self.amounts().items()
        }

    def merged_over(self, default: ResourceRequirement | None) -> ResourceRequirement:
        """This requirement, with amounts it leaves at zero taken from ``default``."""
        if default is None:
            return self
        return default.model_copy(update=self.amounts())
