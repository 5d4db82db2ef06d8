"""Paths that a request names, kept inside the folder they must stay in, and files
written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def inside(root: Path, *parts: str) -> Path | None:
    """``root/part/...`` resolved, or ``None`` where it would leave ``root`` (``..``,
    an absolute part, a link out) or be ``root`` itself."""
    if any(os.path.isabs(part) for part in parts):
        return None
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    return target if target.is_relative_to(base) and target != base else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``:
    a crash or a full disk leaves the old file, never half of the new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """``data`` as JSON, written atomically."""
    write_atomically(path, json.dumps(data, indent=indent).encode("utf-8"))
