"""Helpers that several test modules share: execution logs written by fixture nodes,
and nodegraph events read back from the Prefect server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter


def executions(log: Path) -> list[tuple[str, int, float, str]]:
    """``(start|end, pid, time, node)`` per line of an execution log."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        kind, pid, at, name = line.split()
        rows.append((kind, int(pid), float(at), name))
    return rows


def settled(log: Path, quiet_s: float = 0.5, limit_s: float = 10) -> list:
    """The execution log once nothing has been added to it for ``quiet_s``."""
    rows, deadline = executions(log), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = executions(log)
        if now == rows:
            break
        rows = now
    return rows


def wait_for_first_end(log: Path, child: subprocess.Popen, limit_s: float = 120) -> None:
    """Wait until the execution log has its first ``end`` row, or ``child`` exited."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and child.poll() is None:
        if any(row[0] == "end" for row in executions(log)):
            return
        time.sleep(0.02)


def nodegraph_events(flow_run_id: str, until: Callable[[list], bool], limit_s: float = 30) -> list:
    """nodegraph events related to a flow run, once ``until(events)`` holds (or time is up)."""
    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        while True:
            # A new filter each time: its default window ends when it is made.
            event_filter = EventFilter(
                event=EventNameFilter(prefix=["nodegraph."]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            )
            events = client.read_events(filter=event_filter, limit=50).events
            if until(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.2)
