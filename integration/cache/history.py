"""A short history of runs' cache use, for ``nodegraph cache stats``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> record_run(folder, {"graph": "g", "executed": 1, "cached": 3})
    >>> recent_runs(folder)[0]["cached"]
    3

One JSON line a run in ``<cache folder>/.runs.jsonl``, trimmed to the last
``KEEP`` runs. Writing it is best effort: a read-only folder never fails a run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from integration.cache.besteffort import describe, folder_cause, warn_once

HISTORY_FILE = ".runs.jsonl"
KEEP = 200


def record_run(folder: Path, entry: dict[str, Any]) -> None:
    """Append one run's cache figures, keeping the last ``KEEP`` lines."""
    path = Path(folder) / HISTORY_FILE
    # Replaced, not rewritten in place: a full disk must not truncate the history.
    temporary = path.with_name(f"{HISTORY_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        lines.append(json.dumps({"time": time.time(), **entry}))
        temporary.write_text("\n".join(lines[-KEEP:]) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        warn_once(
            folder_cause(path.parent, exc),
            "cache folder %s: could not record the run's cache use (%s)",
            path.parent,
            describe(exc),
        )


def recent_runs(folder: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The last ``limit`` runs, newest last; unreadable lines are skipped."""
    path = Path(folder) / HISTORY_FILE
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines()[-limit:]:
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs
