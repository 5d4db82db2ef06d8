"""Best-effort I/O in the cache folder: a failure costs one warning per cause and run.

    >>> import pathlib, tempfile
    >>> writable_problem(pathlib.Path(tempfile.mkdtemp())) is None
    True
    >>> begin_run()
    >>> warn_once(("/nowhere", "ENOSPC"), "cache folder %s is full", "/nowhere")
    True
    >>> warn_once(("/nowhere", "ENOSPC"), "cache folder %s is full", "/nowhere")
    False

Run records, the duration history, the cache-use history, spill files and the disk
tier all live in the cache folder, so one broken folder (immutable, uncreatable, full)
breaks all of them at once. They share one set of causes said this run, so the user
reads about that folder once, from whichever of them met it first.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
from collections.abc import Hashable
from pathlib import Path

logger = logging.getLogger("nodegraph.cache")

_said: set[Hashable] = set()
_lock = threading.Lock()


def begin_run() -> None:
    """A new run starts: each cause may be said once again."""
    with _lock:
        _said.clear()


def warn_once(cause: Hashable, message: str, *args: object) -> bool:
    """Log ``message`` unless ``cause`` was already said this run; whether it was logged."""
    with _lock:
        if cause in _said:
            return False
        _said.add(cause)
    logger.warning(message, *args)
    return True


def folder_cause(folder: Path, exc: BaseException) -> tuple[str, str]:
    """What identifies a failure in ``folder``: the folder and the kind of error, so a
    full disk is one cause however many files it refused."""
    code = getattr(exc, "errno", None)
    kind = errno.errorcode.get(code, type(exc).__name__) if isinstance(code, int) else None
    return str(folder), kind or type(exc).__name__


def describe(exc: BaseException) -> str:
    """An OS error as a user reads it: its message, without the errno prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def writable_problem(folder: Path) -> OSError | None:
    """Why files cannot be created in ``folder`` (created if missing), or ``None``.

    A probe write, because an existing folder can refuse writes that ``mkdir`` and
    ``os.access`` accept: as root, an immutable folder (``chattr +i``) or a full disk.
    """
    probe = Path(folder) / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 512)
    except OSError as exc:
        return exc
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return None
