"""The Prefect translator: plans become flows, nodes become tasks.

Only this package (and the runner code) knows Prefect's API.
"""

from integration.prefect.flow import (
    GraphRunFailed,
    flow_from_plan,
    prepare,
    resume,
    run,
    to_flow,
)
from integration.prefect.tasks import NodeOutput, execute_node, node_task

__all__ = [
    "GraphRunFailed",
    "NodeOutput",
    "execute_node",
    "flow_from_plan",
    "node_task",
    "prepare",
    "resume",
    "run",
    "to_flow",
]
