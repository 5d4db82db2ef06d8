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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from integration.errors import NodegraphError


class RunInterrupted(NodegraphError):
    """Raised by ``ExecutionContext.checkpoint()`` when the run has been asked to stop."""


ProgressHook = Callable[[str, float, float | None, str], None]
PreviewHook = Callable[[str, bytes, str], None]
"""Told ``(node_id, image, format)`` for each preview a node sends (``"PNG"``, ``"JPEG"``)."""

PREVIEW_FORMATS = ("PNG", "JPEG")


@dataclass(frozen=True)
class NodeHooks:
    """Where nodes running in the caller's process report: ``progress`` and ``preview``
    (a ComfyUI server turns them into websocket messages, the CLI into its progress line)."""

    progress: ProgressHook | None = None
    preview: PreviewHook | None = None


@dataclass
class ExecutionContext:
    """Run facts and hooks handed to a node that asks for them.

    - ``execution_id``: the run's id (the Prefect flow run id).
    - ``node_id`` / ``node_type``: which node of the graph is running.
    - ``logger``: writes to the Prefect task run's log, so it shows in the UI.
    - ``progress(done, total, message)``: report progress of a long node.
    - ``preview(image, format)``: send a preview image (PNG or JPEG bytes) to whoever
      watches the run in this process (the ComfyUI editor shows it on the node).
    - ``checkpoint()``: call it between units of work; it raises ``RunInterrupted``
      once the run has been asked to stop, so long nodes stop promptly.
    """

    execution_id: str
    node_id: str
    node_type: str
    logger: logging.Logger | logging.LoggerAdapter[Any]
    stop_requested: threading.Event = field(default_factory=threading.Event)
    progress_hook: ProgressHook | None = None
    preview_hook: PreviewHook | None = None
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

    def preview(self, image: bytes, format: str = "PNG") -> None:
        """Send a preview image, encoded as ``format`` (PNG or JPEG). Nodes running in
        another process (Dask workers, process pools) have no watcher: it is dropped."""
        format = format.upper()
        if format not in PREVIEW_FORMATS:
            raise ValueError(
                f"node {self.node_id!r} sent a preview as {format!r}: use one of "
                f"{', '.join(PREVIEW_FORMATS)}"
            )
        if not isinstance(image, bytes | bytearray | memoryview):
            raise TypeError(
                f"node {self.node_id!r} sent a preview of type {type(image).__name__}: "
                "send the encoded image's bytes"
            )
        if self.preview_hook is not None:
            self.preview_hook(self.node_id, bytes(image), format)

    def checkpoint(self) -> None:
        """Raise ``RunInterrupted`` if the run should stop; otherwise return at once."""
        if self.stop_requested.is_set():
            raise RunInterrupted(f"node {self.node_id!r} interrupted: the run is stopping")


_current: ContextVar[ExecutionContext | None] = ContextVar("nodegraph_node_context", default=None)


def current_context() -> ExecutionContext | None:
    """The context of the node running on this thread, for code that cannot take one as
    a parameter (ComfyUI's ``comfy.utils.ProgressBar`` inside a pack)."""
    return _current.get()


@contextmanager
def running_node(context: ExecutionContext) -> Iterator[ExecutionContext]:
    """Make ``context`` the one ``current_context()`` returns while the node runs."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
