"""Records of runs: what ``nodegraph resume`` needs, and how a crashed run is noticed.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> record = RunRecord.begin("r1", "g", {"name": "g", "nodes": []}, {"x": 1}, [],
    ...                          "sequential", scope="r1")
    >>> save_record(folder, record, active=True)
    >>> load_record(folder, "r1").decoded_inputs()
    {'x': 1}

Each run with caching enabled writes ``<cache folder>/runs/<run id>.json``: the graph
document, the inputs, the requested outputs, the strategy, the checkpoint scope, and
how the run ended. While it runs, ``runs/active/<run id>`` names the process (host, pid
and the pid's start time). A process killed with SIGKILL cannot remove its marker, so
the next run on the same host finds a marker whose process is gone: that run crashed.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from integration.errors import NodegraphError

RUNS_FOLDER = "runs"
KEEP = 200


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
        if "pickle" in self.inputs:
            return pickle.loads(base64.b64decode(self.inputs["pickle"]))
        return dict(self.inputs.get("json", {}))

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
        return {"pickle": base64.b64encode(pickle.dumps(inputs)).decode()}


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


def save_record(folder: Path, record: RunRecord, active: bool = False) -> None:
    """Write ``record``; with ``active``, mark it running, otherwise clear the mark."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.run_id}.json"
    temporary = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(asdict(record), default=repr))
    temporary.replace(path)
    marker = folder / "active" / record.run_id
    if active:
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        _trim(folder)
    else:
        marker.unlink(missing_ok=True)


def load_record(folder: Path, run_id: str) -> RunRecord:
    path = folder / f"{run_id}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UnknownRunError(
            f"no record of run {run_id!r} in {folder}; runs are recorded when caching is "
            "enabled, in the cache folder of the configuration that ran them"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownRunError(
            f"the record of run {run_id!r} ({path}) is unreadable: {exc}"
        ) from exc
    return RunRecord(**data)


def abandoned_runs(folder: Path) -> list[RunRecord]:
    """Runs marked active whose process on this host is gone (killed or crashed)."""
    active = folder / "active"
    if not active.is_dir():
        return []
    found = []
    for marker in active.iterdir():
        try:
            record = load_record(folder, marker.name)
        except UnknownRunError:
            marker.unlink(missing_ok=True)
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
