"""Enforcing a node's ``timeout_seconds`` whatever runs it.

    >>> import time
    >>> from integration.timeouts import call_with_timeout
    >>> call_with_timeout(lambda: 42, 1.0)
    42

Prefect interrupts a timed-out task with ``SIGALRM`` only on the main thread; in a
worker thread it raises the timeout into the task's thread, which takes effect only
once a blocking call returns (prefect issue #13004). So a node that hangs in a thread
pool would hang the run. The engine enforces the timeout itself:

- **threads** (the sequential and parallel strategies): the node function runs on its
  own daemon thread while the task's thread waits with a deadline. At the deadline the
  task fails with ``NodeTimeoutError`` at once, so the run goes on. The node's thread
  is then asked to stop: ``TimeoutError`` is raised inside it (this interrupts Python
  code between bytecodes, not a blocking C call such as one long ``sleep`` or socket
  read), and ``ExecutionContext.checkpoint()`` raises ``RunInterrupted``. A thread stuck
  in C keeps running until the call returns; its result is thrown away.
- **processes** (``processes: true``): the node function runs in a child process, which
  is killed at the deadline. Nothing of the node survives, at the price of starting a
  process (forkserver) per attempt of a node that has a timeout. The deadline counts
  from the moment the child is ready (its imports done), so a slow first start does
  not eat the node's time; Prefect's own ``timeout_seconds``, which would count the
  start too, is left unset on such tasks.
"""

from __future__ import annotations

import contextvars
import ctypes
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from integration.errors import NodegraphError, NodeTimeoutError
from integration.lifeline import ORPHAN_EXIT_CODE, Lifeline, watch_parent

T = TypeVar("T")

_PRELOAD = ["integration.graph", "integration.errors"]
STARTUP_LIMIT_S = 120.0
"""How long a child process may take to start and import the node's pack."""


def call_with_timeout(
    fn: Callable[[], T],
    seconds: float,
    on_timeout: Callable[[], None] | None = None,
    what: str = "node",
) -> T:
    """``fn()`` on its own thread; raise ``NodeTimeoutError`` after ``seconds``.

    ``on_timeout`` runs when the deadline passes (the engine sets the node's stop
    event there). Context variables (Prefect's run context) carry over to the thread.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(fn)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"nodegraph {what}", daemon=True)
    thread.start()
    try:
        finished = done.wait(seconds)
    except BaseException:
        # Prefect's own alarm (main thread) interrupted the wait: stop the node too.
        _stop_thread(thread, on_timeout)
        raise
    if not finished:
        _stop_thread(thread, on_timeout)
        raise NodeTimeoutError(f"{what} timed out after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _stop_thread(thread: threading.Thread, on_timeout: Callable[[], None] | None) -> None:
    if on_timeout is not None:
        on_timeout()
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(NodeTimeoutError)
        )


def invoke_in_process(
    invoke: Callable[[Mapping[str, Any]], dict[str, Any]],
    values: Mapping[str, Any],
    seconds: float,
    what: str = "node",
) -> dict[str, Any]:
    """``invoke(values)`` in a child process that is killed after ``seconds``.

    ``invoke`` and ``values`` must pickle (a ``NodeType`` pickles by pack reference).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    receiver, sender = context.Pipe(duplex=False)
    # The forkserver is the child's parent, not this process: the child watches this
    # one through the lifeline, so that a killed run's node stops with it.
    lifeline = Lifeline(context)
    child = context.Process(
        target=_child,
        args=(invoke, dict(values), sender, lifeline.child_end),
        name=f"nodegraph {what}",
        daemon=True,
    )
    child.start()
    sender.close()
    try:
        kind, payload = _receive(receiver, child, STARTUP_LIMIT_S, what, "start")
        if kind == "ready":
            kind, payload = _receive(receiver, child, seconds, what, "finish")
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receiver.close()
        lifeline.close()
    if kind == "error":
        raise payload
    return payload


def _receive(
    receiver: Connection, child: Any, seconds: float, what: str, step: str
) -> tuple[str, Any]:
    if not receiver.poll(seconds):
        raise NodeTimeoutError(
            f"{what} timed out after {seconds:g} s; its process was killed"
            if step == "finish"
            else f"{what}: its process did not {step} within {seconds:g} s and was killed"
        )
    try:
        return pickle.loads(receiver.recv_bytes())
    except EOFError:
        child.join(5)
        raise NodegraphError(
            f"{what}: its process died with exit code {child.exitcode} before answering"
        ) from None


def _child(
    invoke: Callable[[Mapping[str, Any]], dict[str, Any]],
    values: dict[str, Any],
    sender: Connection,
    lifeline: Connection,
) -> None:
    watch_parent(lifeline)
    try:
        sender.send_bytes(pickle.dumps(("ready", None)))
    except OSError:  # the process that started it died meanwhile: the node never starts
        os._exit(ORPHAN_EXIT_CODE)
    try:
        answer: tuple[str, Any] = ("ok", invoke(values))
    except BaseException as exc:
        answer = ("error", exc)
    try:
        # Round-trip first: an exception that pickles but cannot be rebuilt would
        # otherwise surface in the parent as an unrelated TypeError.
        payload = pickle.dumps(answer)
        pickle.loads(payload)
    except Exception as exc:  # an unpicklable result or exception
        kind, value = answer
        reason = f"{value!r}" if kind == "error" else f"its result cannot be pickled: {exc!r}"
        payload = pickle.dumps(("error", NodegraphError(f"node failed: {reason}")))
    try:
        sender.send_bytes(payload)
    except OSError:  # nobody is left to answer
        os._exit(ORPHAN_EXIT_CODE)
    finally:
        sender.close()
