"""The billing clocks: a monotonic one for intervals and the wall clock's billing period.

Both are injected so tests move time by hand. ``period`` is on the hot path: it
recomputes the calendar month only when the wall clock leaves the current one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.billing.meter import Period


class BillingClock:
    __slots__ = ("_bounds", "_current", "_wall", "now")

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.now = clock  # monotonic seconds: refresh ages, idle times, blocks
        self._wall = wall
        self._current = Period.at(wall())
        self._bounds = (self._current.start.timestamp(), self._current.end.timestamp())

    def period(self) -> Period:
        """The current billing period (recomputed only when the wall clock leaves it)."""
        now = self._wall()
        start, end = self._bounds
        if not start <= now < end:
            self._current = Period.at(now)
            self._bounds = (self._current.start.timestamp(), self._current.end.timestamp())
        return self._current
