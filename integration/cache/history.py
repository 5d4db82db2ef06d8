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
import time
from pathlib import Path
from typing import Any

HISTORY_FILE = ".runs.jsonl"
KEEP = 200


def record_run(folder: Path, entry: dict[str, Any]) -> None:
    """Append one run's cache figures, keeping the last ``KEEP`` lines."""
    path = Path(folder) / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        lines.append(json.dumps({"time": time.time(), **entry}))
        path.write_text("\n".join(lines[-KEEP:]) + "\n")
    except OSError:
        pass


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
