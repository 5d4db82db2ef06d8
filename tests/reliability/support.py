"""Helpers the reliability scenarios share: the CLI in a child process, traceback checks,
and process liveness by PID."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from integration.runs import process_start

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PACKS = FIXTURES / "packs"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``nodegraph ARGS`` in a child process, with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "integration.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


def assert_no_traceback(*texts: str) -> None:
    """No Python traceback in what a command printed."""
    for text in texts:
        assert "Traceback (most recent call last)" not in text, text[-4000:]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return bool(process_start(pid))
    return "\nState:\tZ" not in status


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def forged_unsigned(payload: bytes) -> bytes:
    """A cache entry as an attacker without the key writes it, in the unsigned layout of
    earlier versions: ``NGC1 | flags 0 | written_at | sha256(written_at + payload)``."""
    stamp = struct.pack(">d", time.time())
    return b"NGC1\x00" + stamp + hashlib.sha256(stamp + payload).digest() + payload


def forged_signed(payload: bytes, key_id: bytes, secret: bytes) -> bytes:
    """A well-formed signed entry (``NGC2``) naming ``key_id``, with a correct checksum,
    signed with ``secret``: an attacker's guess, or another machine's key."""
    body = struct.pack(">d", time.time()) + key_id + payload
    checksum = hashlib.sha256(body).digest()
    signature = hmac.new(secret, body, hashlib.sha256).digest()
    return b"NGC2\x00" + body[:8] + key_id + checksum + signature + payload


def within_budget(
    call: Callable[[], object], seconds: float = 5.0, megabytes: float = 200.0
) -> BaseException | None:
    """Run ``call``; the exception it raised (or ``None``), after asserting it took at
    most ``seconds`` and allocated at most ``megabytes`` at its peak (generous bounds
    for bad input, which must fail fast and small, not a benchmark)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
        raised = None
    except Exception as exc:
        raised = exc
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed <= seconds, f"took {elapsed:.1f} s, over the {seconds} s budget"
    assert peak <= megabytes * 2**20, f"peaked at {peak / 2**20:.0f} MB, over {megabytes} MB"
    return raised
