"""Keep CPython's cycle collector off the objects a run starts with.

    >>> with heap_frozen():
    ...     pass  # the run

A full collection traverses every tracked object: the imported modules (Prefect,
pydantic, ...) and a large plan come to several hundred thousand objects, about 0.1 s
per collection, and the objects a 10,000-node run allocates set off several. In a run
of trivial nodes that was a third of the wall time, in every other sample.
``gc.freeze()`` moves what exists when the run starts to a permanent generation that
collections skip; objects the run creates are collected as always, and what was frozen
still dies by reference counting.

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

_lock = threading.Lock()
_holders = 0
_owned = False


@contextmanager
def heap_frozen(enabled: bool = True) -> Iterator[None]:
    """Freeze the heap for the block, unless another run holds it frozen already."""
    global _holders, _owned
    if not enabled:
        yield
        return
    with _lock:
        if _holders == 0:
            _owned = gc.isenabled() and gc.get_freeze_count() == 0
            if _owned:
                gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _owned:
                gc.unfreeze()
                _owned = False
