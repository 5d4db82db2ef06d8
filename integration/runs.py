"""Records of runs: what ``nodegraph resume`` needs, and how a crashed run is noticed.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> record = RunRecord.begin("r1", "g", {"name": "g", "nodes": []}, {"x": 1}, [],
    ...                          "sequential", scope="r1")
    >>> save_record(folder, record, active=True)
    True
    >>> load_record(folder, "r1").decoded_inputs()
    {'x': 1}

Each run with caching enabled writes ``<cache folder>/runs/<run id>.json``: the graph
document, the inputs, the requested outputs, the strategy, the checkpoint scope, and
how the run ended. While it runs, ``runs/active/<run id>`` names the process (host, pid
and the pid's start time). A process killed with SIGKILL cannot remove its marker, so
the next run on the same host finds a marker whose process is gone: that run crashed.

Records are best effort: a cache folder that cannot take them costs a warning, never
the run, and a record left half-written (by a full disk) is skipped by the next run.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import socket
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from integration.cache.besteffort import describe, folder_cause, warn_once, writable_problem
from integration.cache.signing import KeyFileError, resolve_key, sign, verifies
from integration.errors import NodegraphError

logger = logging.getLogger("nodegraph.run")
RUNS_FOLDER = "runs"
KEEP = 200
STALE_TEMPORARY_S = 600.0


class UnknownRunError(NodegraphError, LookupError):
    """No record of the run asked for."""


@dataclass
class RunRecord:
    """One run, as ``nodegraph resume`` needs it."""

    run_id: str
    graph: str
    document: dict[str, Any]
    inputs: dict[str, Any]
    """Encoded: ``{"json": {...}}``, or ``{"pickle": base64}`` for values JSON lacks."""
    outputs: list[str]
    strategy: str
    scope: str
    """The id that scopes checkpoints of ``cacheable=False`` nodes: the first run's."""
    processes: bool = False
    max_workers: int | None = None
    state: str = "running"
    halted_at: str | None = None
    resumes: str | None = None
    host: str = ""
    pid: int = 0
    pid_started: str = ""
    started: float = 0.0
    finished: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(
        cls,
        run_id: str,
        graph: str,
        document: dict[str, Any],
        inputs: dict[str, Any],
        outputs: list[str],
        strategy: str,
        scope: str,
        **more: Any,
    ) -> RunRecord:
        """A record for a run starting now in this process."""
        return cls(
            run_id=run_id,
            graph=graph,
            document=document,
            inputs=_encode(inputs),
            outputs=outputs,
            strategy=strategy,
            scope=scope,
            host=socket.gethostname(),
            pid=os.getpid(),
            pid_started=process_start(os.getpid()),
            started=time.time(),
            **more,
        )

    def decoded_inputs(self) -> dict[str, Any]:
        """The run's inputs. Pickled ones are unpickled only when their HMAC verifies
        (``UnknownRunError`` otherwise): the record sits in the cache folder, which
        others may write, and unpickling is code execution."""
        if "pickle" not in self.inputs:
            return dict(self.inputs.get("json", {}))
        data = base64.b64decode(self.inputs["pickle"])
        try:
            key = resolve_key()
        except KeyFileError as exc:
            raise UnknownRunError(
                f"the inputs of run {self.run_id!r} cannot be verified: {exc}"
            ) from None
        if not verifies(key, data, self.inputs.get("signature")):
            raise UnknownRunError(
                f"the pickled inputs in the record of run {self.run_id!r} do not verify "
                f"with {key.describe()} (signed with key {self.inputs.get('key') or 'none'}"
                "): the record was written elsewhere or altered, so it is not unpickled; "
                "run the graph again with its inputs instead"
            )
        return pickle.loads(data)

    def process_gone(self) -> bool:
        """Whether the process that ran this record has died (on this host only)."""
        if self.host != socket.gethostname():
            return False
        return process_start(self.pid) != self.pid_started


def _encode(inputs: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(inputs, allow_nan=False)
        return {"json": inputs}
    except (TypeError, ValueError):
        data = pickle.dumps(inputs)
        encoded: dict[str, Any] = {"pickle": base64.b64encode(data).decode()}
        try:
            key = resolve_key()
        except KeyFileError:
            return encoded  # unsigned: resume will refuse it, saying why
        return {**encoded, "signature": sign(key, data), "key": key.id}


def process_start(pid: int) -> str:
    """A process's start time (clock ticks since boot), or "" when it does not exist.

    Comparing it guards against a recycled pid. Without ``/proc`` it falls back to
    whether the pid exists.
    """
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return ""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return "alive"  # exists, owned by someone else
    except OSError:
        return ""
    return "alive"


def runs_folder(cache_root: Path) -> Path:
    return Path(cache_root) / RUNS_FOLDER


def _fields(record: RunRecord) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies the graph document and the node states,
    # which costs seconds on a 10,000-node run; json.dumps reads them as they are.
    return {f.name: getattr(record, f.name) for f in fields(record)}


def save_record(folder: Path, record: RunRecord, active: bool = False) -> bool:
    """Write ``record``; with ``active``, mark it running, otherwise clear the mark.

    Best effort: a folder that cannot take the record (unwritable, uncreatable, full)
    costs one warning per cause and run, never the run. Returns whether it was written.
    """
    path = folder / f"{record.run_id}.json"
    temporary = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(_fields(record), default=repr))
        temporary.replace(path)
        written = True
    except Exception as exc:  # a record must never fail the run it records
        written = False
        _unlink(temporary)
        _unrecorded(folder, record, exc)
    marker = folder / "active" / record.run_id
    try:
        if not active:
            marker.unlink(missing_ok=True)  # even when the final record failed
        elif written:
            marker.parent.mkdir(exist_ok=True)
            marker.touch()
            _trim(folder)
    except OSError as exc:
        _unrecorded(folder, record, exc)
    return written


def _unrecorded(folder: Path, record: RunRecord, exc: BaseException) -> None:
    # Keyed on the cache folder (the runs folder's parent), as the disk tier's failures
    # are: a full disk is said once per run, whichever file met it first.
    warn_once(
        folder_cause(folder.parent, exc),
        "cache folder %s: cannot record run %s (%s); the run goes on, but `nodegraph "
        "resume %s` may not find it",
        folder.parent,
        record.run_id,
        describe(exc),
        record.run_id,
    )


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def load_record(folder: Path, run_id: str) -> RunRecord:
    path = folder / f"{run_id}.json"
    try:
        data = json.loads(path.read_text())
        return RunRecord(**data)
    except (FileNotFoundError, NotADirectoryError):
        problem = writable_problem(folder)
        why = (
            f"; runs cannot be recorded there now: {folder} cannot be written "
            f"({describe(problem)}), so a run that used it was not recorded and cannot be "
            "resumed: run the graph again (nodes that reached a cache tier are not recomputed)"
            if problem is not None
            else ""
        )
        raise UnknownRunError(
            f"no record of run {run_id!r} in {folder}; runs are recorded when caching is "
            f"enabled, in the cache folder of the configuration that ran them{why}"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        # Half-written (a full disk), hand-edited, or from another version's fields.
        raise UnknownRunError(
            f"the record of run {run_id!r} ({path}) is unreadable: {exc}"
        ) from exc


def abandoned_runs(folder: Path) -> list[RunRecord]:
    """Runs marked active whose process on this host is gone (killed or crashed).

    Best effort: an unreadable folder means none; a marker whose record is missing or
    unreadable is dropped, so a half-written record never blocks the next run.
    """
    try:
        markers = list((folder / "active").iterdir())
    except OSError:
        return []
    found = []
    for marker in markers:
        try:
            record = load_record(folder, marker.name)
        except UnknownRunError as exc:
            logger.warning("ignoring the run record %s: %s", marker.name, exc)
            _unlink(marker)
            continue
        if record.state == "running" and record.process_gone():
            found.append(record)
    return found


def _trim(folder: Path) -> None:
    dated = []
    for path in folder.glob("*.json"):
        try:
            dated.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # trimmed by another process meanwhile
            continue
    for _, stale in sorted(dated)[:-KEEP]:
        if not (folder / "active" / stale.stem).exists():
            stale.unlink(missing_ok=True)
    # What a writer killed between write and rename left behind.
    for leftover in folder.glob("*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_TEMPORARY_S:
                leftover.unlink()
        except FileNotFoundError:
            continue
