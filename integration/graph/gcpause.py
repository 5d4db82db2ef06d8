"""Keep CPython's cyclic garbage collector off large object graphs: paused while they
are built, and frozen out of its scans while a run goes.

    >>> from integration.graph.gcpause import gc_paused, heap_frozen
    >>> with gc_paused():
    ...     nodes = [{"id": i} for i in range(10_000)]
    >>> with heap_frozen():
    ...     pass  # a run

Loading and binding a 10,000-node graph allocates hundreds of thousands of objects that
live on; each allocation burst triggers full collections that scan all of them, which
more than doubled the time of ``benchmarks/plan.py``. Nothing built here forms cycles
that need collecting, so the collector is paused and restored afterwards.

A run cannot pause the collector: its nodes are users' code, which may make cyclic
garbage for hours. A full collection traverses every tracked object, though: the
imported modules (Prefect, pydantic, ...) and a large plan come to several hundred
thousand objects, about 0.1 s per collection, and the objects a 10,000-node run
allocates set off several; in a run of trivial nodes that was a third of the wall
time, in every other sample. ``heap_frozen`` moves what exists when the run starts to
``gc.freeze()``'s permanent generation, which collections skip; objects the run
creates are collected as always, and what was frozen still dies by reference counting.

Only cyclic garbage among the frozen objects waits, until ``gc.unfreeze()`` when the
last run of the process ends. The frozen set is what was alive when a run started in
an idle process, and no run freezes again while another holds it, so what waits is
bounded even when runs overlap without end (a server). A process that froze objects
itself (``gc.get_freeze_count() > 0``, e.g. before forking workers) is left alone, as is
one whose collector is disabled.
"""

from __future__ import annotations

import gc
import threading
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


_freeze_lock = threading.Lock()
_frozen_by = 0
_freeze_ours = False


@contextmanager
def heap_frozen(enabled: bool = True) -> Iterator[None]:
    """Freeze the heap for the block, unless another run holds it frozen already."""
    global _frozen_by, _freeze_ours
    if not enabled:
        yield
        return
    with _freeze_lock:
        if _frozen_by == 0:
            _freeze_ours = gc.isenabled() and gc.get_freeze_count() == 0
            if _freeze_ours:
                gc.freeze()
        _frozen_by += 1
    try:
        yield
    finally:
        with _freeze_lock:
            _frozen_by -= 1
            if _frozen_by == 0 and _freeze_ours:
                gc.unfreeze()
                _freeze_ours = False
