"""nodegraph: run typed node graphs as Prefect flows.

    >>> import integration
    >>> result = integration.run("flows/examples/hello.yaml", inputs={"name": "Ada"})
    >>> result.outputs["message"], result.nodes["shout"].state
    ('HELLO, ADA!', <NodeState.COMPLETED: 'completed'>)

The graph layer (``integration.graph``) imports no runtime; ``run`` and ``to_flow``
import Prefect on first use, so ``nodegraph validate`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Imported for its effect: it registers the ComfyUI pack and document loaders with the
# graph layer (integration.graph.loaders), for every user of the package and every worker.
from integration import comfy  # noqa: F401
from integration.config import NodegraphConfig, load_config
from integration.errors import ErrorType, GraphLoadError, NodeError, NodegraphError
from integration.graph import (
    ExecutionContext,
    Graph,
    GraphInputError,
    GraphValidationError,
    NodeRegistry,
    NodeType,
    Port,
    bind,
    load_graph,
    node,
)
from integration.plan import Plan, make_plan
from integration.result import NodeReport, NodeState, RunResult, RunState

if TYPE_CHECKING:
    from integration.prefect import GraphRunFailed, resume, run, to_flow
    from integration.prefect.submit import RunHandle, cancel, status, submit

__version__ = "0.1.0"

_LAZY = {"run", "resume", "to_flow", "GraphRunFailed"}
_LAZY_SUBMIT = {"submit", "status", "cancel", "RunHandle"}


def __getattr__(name: str) -> Any:
    # Lazy: importing Prefect costs seconds, which loading and validating never need.
    if name in _LAZY:
        from integration import prefect as translator

        return getattr(translator, name)
    if name in _LAZY_SUBMIT:
        from integration.prefect import submit

        return getattr(submit, name)
    raise AttributeError(f"module 'integration' has no attribute {name!r}")


__all__ = [
    "ErrorType",
    "ExecutionContext",
    "Graph",
    "GraphInputError",
    "GraphLoadError",
    "GraphRunFailed",
    "GraphValidationError",
    "NodeError",
    "NodeRegistry",
    "NodeReport",
    "NodeState",
    "NodeType",
    "NodegraphConfig",
    "NodegraphError",
    "Plan",
    "Port",
    "RunHandle",
    "RunResult",
    "RunState",
    "bind",
    "cancel",
    "load_config",
    "load_graph",
    "make_plan",
    "node",
    "resume",
    "run",
    "status",
    "submit",
    "to_flow",
]
