"""What a running node may know about its run.

    >>> from integration.graph import node, ExecutionContext
    >>> @node
    ... def shout(text: str, ctx: ExecutionContext) -> str:
    ...     ctx.logger.info("shouting in %s", ctx.node_id)
    ...     return text.upper()

A parameter annotated ``ExecutionContext`` is never a port; the engine fills it in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from integration.errors import NodegraphError


class RunInterrupted(NodegraphError):
    """Raised by ``ExecutionContext.checkpoint()`` when the run has been asked to stop."""


ProgressHook = Callable[[str, float, float | None, str], None]


@dataclass
class ExecutionContext:
    """Run facts and hooks handed to a node that asks for them.

    - ``execution_id``: the run's id (the Prefect flow run id).
    - ``node_id`` / ``node_type``: which node of the graph is running.
    - ``logger``: writes to the Prefect task run's log, so it shows in the UI.
    - ``progress(done, total, message)``: report progress of a long node.
    - ``checkpoint()``: call it between units of work; it raises ``RunInterrupted``
      once the run has been asked to stop, so long nodes stop promptly.
    """

    execution_id: str
    node_id: str
    node_type: str
    logger: logging.Logger | logging.LoggerAdapter[Any]
    stop_requested: threading.Event = field(default_factory=threading.Event)
    progress_hook: ProgressHook | None = None
    last_progress: tuple[float, float | None, str] | None = None

    def progress(self, done: float, total: float | str | None = None, message: str = "") -> None:
        """Record and log how far the node has got: ``progress(0.4, "decoding")`` (a
        fraction) or ``progress(40, 100, "decoding")`` (done of total). It shows in the
        Prefect task run's log and, when the node runs in the CLI's process, in
        ``nodegraph run``'s progress line."""
        if isinstance(total, str):
            total, message = None, total
        self.last_progress = (done, total, message)
        if total:
            self.logger.info("progress %s/%s (%.0f%%) %s", done, total, 100 * done / total, message)
        else:
            self.logger.info("progress %s %s", done, message)
        if self.progress_hook is not None:
            self.progress_hook(self.node_id, done, total, message)

    def checkpoint(self) -> None:
        """Raise ``RunInterrupted`` if the run should stop; otherwise return at once."""
        if self.stop_requested.is_set():
            raise RunInterrupted(f"node {self.node_id!r} interrupted: the run is stopping")
