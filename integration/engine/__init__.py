"""The engine: one backend-free scheduler for every run.

    >>> from integration.engine import InlineBackend, Scheduler
    >>> # Scheduler(plan, InlineBackend(), inputs).run() -> RunResult

It imports neither Prefect nor Dask (a test checks): ``integration.prefect.backend``
is the backend real runs use.
"""

from integration.engine.backend import Backend, Completion, InlineBackend, Submission
from integration.engine.compile import ExecutionPlan, compile_plan, consult_cache
from integration.engine.hooks import Hooks, ListenerHooks, NodeListener, RunHooks, StartedHooks
from integration.engine.scheduler import Scheduler
from integration.engine.units import NodeOutput

__all__ = [
    "Backend",
    "Completion",
    "ExecutionPlan",
    "Hooks",
    "InlineBackend",
    "ListenerHooks",
    "NodeListener",
    "NodeOutput",
    "RunHooks",
    "Scheduler",
    "StartedHooks",
    "Submission",
    "compile_plan",
    "consult_cache",
]
