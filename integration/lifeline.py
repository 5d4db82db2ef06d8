"""Child processes that exit with the process that started them, ``kill -9`` included.

    >>> import multiprocessing
    >>> from integration.lifeline import Lifeline
    >>> lifeline = Lifeline(multiprocessing.get_context("spawn"))
    >>> # hand ``lifeline.child_end`` to the child; there, ``watch_parent(child_end)``
    >>> lifeline.close()

The parent holds the only write end of a pipe and never writes to it; the child blocks
reading the other end on a daemon thread. When the parent dies, however it dies, the
kernel closes its end, the read returns end-of-file and the child exits at once. This
is how distributed's own worker processes watch their nanny (``AsyncProcess``).

``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that started the child
exits, and a ``ProcessPoolExecutor`` starts its workers on demand from whichever thread
submits (the resolver threads of a run, which end with the run), so it would kill a
warm pool's workers after every run.

``orphaned()`` closes the remaining window: the pipe is noticed on another thread, so a
worker that takes a queued node in the instant after its parent died checks first and
does not start it.
"""

from __future__ import annotations

import os
import threading
from multiprocessing.connection import Connection
from typing import Any

ORPHAN_EXIT_CODE = 75
"""Exit status of a child whose parent died (distinct from a node's own failure)."""

_parent_pid: int | None = None


class Lifeline:
    """The parent's side of a lifeline: alive for as long as this object is open."""

    def __init__(self, context: Any) -> None:
        self.child_end, self._parent_end = context.Pipe(duplex=False)
        self.parent_pid = os.getpid()

    def close(self) -> None:
        """Cut the lifeline: every child watching it exits."""
        self._parent_end.close()
        self.child_end.close()


def watch_parent(child_end: Connection, parent_pid: int | None = None) -> None:
    """In a child: exit as soon as the parent's end of ``child_end`` closes.

    ``parent_pid`` (the starting process) is remembered for ``orphaned``; a child whose
    parent is already gone when this runs exits at once.
    """
    global _parent_pid
    _parent_pid = parent_pid
    if orphaned():
        os._exit(ORPHAN_EXIT_CODE)
    thread = threading.Thread(
        target=_exit_at_eof, args=(child_end,), name="nodegraph-lifeline", daemon=True
    )
    thread.start()


def orphaned() -> bool:
    """Whether the process that ``watch_parent`` was told about is no longer the parent
    (it died and this process was re-parented)."""
    return _parent_pid is not None and os.getppid() != _parent_pid


def exit_if_orphaned() -> None:
    """Exit now if the parent is gone: nothing would read what this process computes."""
    if orphaned():
        os._exit(ORPHAN_EXIT_CODE)


def _exit_at_eof(child_end: Connection) -> None:
    try:
        child_end.recv_bytes()
    except (EOFError, OSError):
        pass
    # Neither atexit handlers nor a clean interpreter shutdown: they could wait on
    # locks the dead parent held (multiprocessing queues) or on the node still running.
    os._exit(ORPHAN_EXIT_CODE)
