"""Pause the cyclic garbage collector while building large, acyclic object graphs.

    >>> from integration.graph.gcpause import gc_paused
    >>> with gc_paused():
    ...     nodes = [{"id": i} for i in range(10_000)]

Loading and binding a 10,000-node graph allocates hundreds of thousands of objects that
live on; each allocation burst triggers full collections that scan all of them, which
more than doubled the time of ``benchmarks/plan.py``. Nothing built here forms cycles
that need collecting, so the collector is paused and restored afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, if it was enabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
