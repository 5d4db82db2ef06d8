"""Errors shared by every stage of a run.

    >>> from integration.errors import ErrorType, classify_exception
    >>> classify_exception(TimeoutError()) is ErrorType.TIMEOUT
    True

This module imports neither Prefect nor Dask, so the graph layer can raise and report
errors without pulling in a runtime.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class ErrorType(StrEnum):
    """Why a node failed. The failure-policy layer decides what to do per type."""

    VALIDATION = "validation"
    RESOURCE = "resource"
    TIMEOUT = "timeout"
    DEPENDENCY = "dependency"
    RUNTIME = "runtime"


class NodegraphError(Exception):
    """Base class of every error nodegraph raises on purpose."""


class GraphLoadError(NodegraphError):
    """A graph document could not be read or does not match the schema.

    ``problems`` holds one ``(location, message)`` pair per problem, where location
    reads like ``flows/x.yaml:12:5 nodes[2].type``.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{loc}: {msg}" for loc, msg in problems]
        super().__init__(f"cannot load graph from {source}:\n  " + "\n  ".join(lines))


class ConfigError(NodegraphError):
    """The configuration file or environment holds a value nodegraph cannot use."""


class NodeInputError(NodegraphError, ValueError):
    """A value that reached a node's input port breaks the port's constraints."""

    error_type = ErrorType.VALIDATION


class NodeOutputError(NodegraphError, TypeError):
    """A node returned something that does not match its declared output ports."""

    error_type = ErrorType.VALIDATION


class NodeTimeoutError(NodegraphError, TimeoutError):
    """A node ran longer than its policy's ``timeout_seconds``."""

    error_type = ErrorType.TIMEOUT


class DependencyError(NodegraphError):
    """A node could not run because a node it depends on did not produce a result."""

    error_type = ErrorType.DEPENDENCY


def summarize_value(value: Any, limit: int = 80) -> str:
    """A short, one-line picture of a value for error messages: its repr, cut at
    ``limit`` characters, with the type and size when it had to be cut."""
    text = " ".join(bounded_repr(value, limit + 1).split())
    if len(text) <= limit:
        return text
    try:
        size = f", len {len(value)}" if hasattr(value, "__len__") else ""
    except Exception:
        size = ""
    return f"{text[: limit - 3]}... ({type(value).__name__}{size})"


_MAX_REPR_DEPTH = 50


def bounded_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, in work bounded by ``limit``.

    Lists, tuples, sets and dicts (nested, shared or self-containing) are walked only
    until the text is long enough, so an alias bomb or a million-element list costs as
    little as a short one; long strings and huge ints are cut before ``repr``. Other
    objects use their own ``repr``.
    """
    out: list[str] = []
    _render(value, out, [limit + 1], set(), 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _render(value: Any, out: list[str], budget: list[int], active: set[int], depth: int) -> None:
    def emit(piece: str) -> None:
        out.append(piece)
        budget[0] -= len(piece)

    if isinstance(value, dict):
        opening, closing, items = "{", "}", value.items()
    elif isinstance(value, list):
        opening, closing, items = "[", "]", value
    elif isinstance(value, tuple):
        opening, closing, items = "(", ",)" if len(value) == 1 else ")", value
    elif isinstance(value, set | frozenset):
        opening, closing, items = "{", "}", value
    else:
        emit(_scalar_repr(value, budget[0]))
        return
    if id(value) in active or depth >= _MAX_REPR_DEPTH:
        emit(f"{opening}...{closing}")
        return
    active.add(id(value))
    emit(opening)
    # Each element costs at least one character, so the walk stops within ``limit``
    # elements however large the container is.
    for index, item in enumerate(items):
        if budget[0] <= 0:
            break
        if index:
            emit(", ")
        if isinstance(value, dict):
            _render(item[0], out, budget, active, depth + 1)
            emit(": ")
            item = item[1]
        _render(item, out, budget, active, depth + 1)
    emit(closing)
    active.discard(id(value))


def _scalar_repr(value: Any, room: int) -> str:
    room = max(room, 1)
    if isinstance(value, str | bytes):
        return repr(value[: room + 1])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        # repr of an int is quadratic in its digits, and refused past 4300 of them
        return f"<int of {value.bit_length()} bits>"
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} with a failing repr>"


def classify_exception(exc: BaseException) -> ErrorType:
    """Map an exception onto an ``ErrorType``.

    Rules, first match wins: an exception with an ``error_type`` attribute keeps it;
    ``TimeoutError`` is ``timeout``; ``MemoryError`` is ``resource``; everything else
    is ``runtime``.
    """
    declared = getattr(exc, "error_type", None)
    if isinstance(declared, ErrorType):
        return declared
    if isinstance(exc, TimeoutError):
        return ErrorType.TIMEOUT
    if isinstance(exc, MemoryError):
        return ErrorType.RESOURCE
    return ErrorType.RUNTIME


RECOVERABLE = frozenset({ErrorType.RUNTIME, ErrorType.TIMEOUT, ErrorType.RESOURCE})
"""Error types that a retry or a later run may get past; bad data and failed
upstreams are not."""

_ENGINE_DIRS = (
    str(Path(__file__).resolve().parent) + os.sep,  # nodegraph's own engine
    str(Path(concurrent.futures.__file__).resolve().parent) + os.sep,  # thread/process pools
    str(Path(threading.__file__).resolve()),
)


def trimmed_traceback(exc: BaseException) -> str:
    """The traceback without the engine's frames (Prefect's, nodegraph's, the pools').

    What remains is the node's own code. Exceptions that crossed a process boundary
    lost their frames on the way; then only the exception line remains.
    """
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_engine_dirs())
    ]
    lines = traceback.format_list(frames) if frames else []
    return "".join(
        (["Traceback (node frames only):\n"] if lines else [])
        + lines
        + traceback.format_exception_only(exc)
    )


def _engine_dirs() -> tuple[str, ...]:
    prefect = sys.modules.get("prefect")
    extra = (str(Path(prefect.__file__).resolve().parent) + os.sep,) if prefect else ()
    return _ENGINE_DIRS + extra


@dataclass
class NodeError:
    """The record of one node's failure, as it appears in a ``RunResult``.

    ``stacktrace`` is the full traceback; ``node_traceback`` keeps the node's own frames.
    ``recoverable`` says whether a retry or a later run may get past it.
    """

    node_id: str
    node_type: str
    error_type: ErrorType
    message: str
    exception_type: str = ""
    stacktrace: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    node_traceback: str = ""

    @property
    def recoverable(self) -> bool:
        return self.error_type in RECOVERABLE

    @classmethod
    def from_exception(cls, node_id: str, node_type: str, exc: BaseException) -> NodeError:
        return cls(
            node_id=node_id,
            node_type=node_type,
            error_type=classify_exception(exc),
            message=str(exc) or type(exc).__name__,
            exception_type=type(exc).__qualname__,
            stacktrace="".join(traceback.format_exception(exc)),
            node_traceback=trimmed_traceback(exc),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_type": self.node_type,
            "error_type": str(self.error_type),
            "message": self.message,
            "exception_type": self.exception_type,
            "recoverable": self.recoverable,
            "stacktrace": self.stacktrace,
            "node_traceback": self.node_traceback,
        }


class NodeExecutionError(NodegraphError):
    """A node's failure as an exception: the fields of its ``NodeError`` record."""

    def __init__(self, record: NodeError) -> None:
        self.record = record
        self.node_id = record.node_id
        self.node_type = record.node_type
        self.error_type = record.error_type
        self.message = record.message
        self.stacktrace = record.stacktrace
        self.recoverable = record.recoverable
        super().__init__(
            f"{record.node_id} ({record.node_type}): {record.error_type}: {record.message}"
        )
