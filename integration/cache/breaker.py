"""A circuit breaker per tier: a tier that failed is skipped until a back-off expires.

    >>> clock = [0.0]
    >>> breaker = CircuitBreaker(first_s=30, max_s=240, clock=lambda: clock[0])
    >>> breaker.allow()
    True
    >>> breaker.failed(); breaker.allow()
    False
    >>> clock[0] = 31; breaker.allow(), breaker.allow()   # one probe after the back-off
    (True, False)
    >>> breaker.succeeded(); breaker.allow()
    True

A frozen Redis or S3 answers every call with a timeout. Without a breaker each node
pays that timeout (twice: the read, then the write); with one, the process pays it
once, then skips the tier, and after the back-off lets a single call through to see
whether the tier is back (half-open). A failed probe doubles the back-off, up to
``max_s``; a successful one closes the breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

FIRST_BACKOFF_S = 30.0
MAX_BACKOFF_S = 240.0


class CircuitBreaker:
    """Closed (calls go through), open (skipped) or half-open (one probe call)."""

    def __init__(
        self,
        first_s: float = FIRST_BACKOFF_S,
        max_s: float = MAX_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"circuit breaker: need 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s, self.max_s, self._clock = first_s, max_s, clock
        self.backoff_s = first_s
        self.opened_at: float | None = None
        self.trips = 0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped (open, or half-open with a probe out)."""
        return self.opened_at is not None

    def retry_in(self) -> float:
        """Seconds until the next probe (0 when closed or due)."""
        with self._lock:
            if self.opened_at is None:
                return 0.0
            return max(0.0, self.opened_at + self.backoff_s - self._clock())

    def allow(self) -> bool:
        """Whether this call may go to the tier: always when closed; once per back-off
        (the probe) when open."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self._probing or self._clock() < self.opened_at + self.backoff_s:
                return False
            self._probing = True
            return True

    def failed(self) -> None:
        """A call failed: open, or after a failed probe, open for twice as long."""
        with self._lock:
            if self.opened_at is not None and self._probing:
                self.backoff_s = min(self.backoff_s * 2, self.max_s)
            self.opened_at = self._clock()
            self._probing = False
            self.trips += 1

    def succeeded(self) -> None:
        """A call went through: close, and start the next back-off from the beginning."""
        if self.opened_at is None:
            return  # the common case, without taking the lock
        with self._lock:
            self.opened_at, self._probing, self.backoff_s = None, False, self.first_s
