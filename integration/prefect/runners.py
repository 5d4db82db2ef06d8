"""Strategies and the Prefect task runners behind them.

    >>> from integration.prefect.runners import task_runner_for
    >>> type(task_runner_for("parallel", max_workers=4)).__name__
    'ThreadPoolTaskRunner'

| strategy | how nodes run |
| --- | --- |
| sequential | direct task calls in the flow's thread, in topological order |
| parallel | ``ThreadPoolTaskRunner``, or ``ProcessPoolTaskRunner`` with ``processes=True`` |
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

STRATEGIES = ("sequential", "parallel")


def task_runner_for(
    strategy: str, *, processes: bool = False, max_workers: int | None = None
) -> TaskRunner[Any]:
    """The task runner a strategy uses. Unknown strategies are a ``ValueError``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "parallel" and processes:
        return ProcessPoolTaskRunner(max_workers=max_workers)
    if strategy == "sequential":
        # Nodes are called directly, so the runner only serves stray submits.
        return ThreadPoolTaskRunner(max_workers=1)
    return ThreadPoolTaskRunner(max_workers=max_workers)
