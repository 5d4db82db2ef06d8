"""Paths that a request names, kept inside the folder they must stay in."""

from __future__ import annotations

import os
from pathlib import Path


def inside(root: Path, *parts: str) -> Path | None:
    """``root/part/...`` resolved, or ``None`` where it would leave ``root`` (``..``,
    an absolute part, a link out) or be ``root`` itself."""
    if any(os.path.isabs(part) for part in parts):
        return None
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    return target if target.is_relative_to(base) and target != base else None
