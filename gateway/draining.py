"""One shutdown for every listener: telling long-lived connections that the server is going away.

uvicorn's graceful shutdown waits for in-flight responses, but an SSE stream
never finishes by itself: it would hold shutdown up for the whole grace period
and then be cancelled, and the MQTT listener (owned by the app, not uvicorn)
would keep accepting meanwhile. Streams and the MQTT server register a
callback here; the server calls ``begin()`` as its shutdown starts, at the
moment it stops accepting HTTP, and each stream ends cleanly (its client
reconnects, to another replica if need be, and resumes from its last id).

Lame duck (``FLOWGATE_LAME_DUCK_SECONDS``, as nats-server's lame duck mode):
the callbacks are called spread evenly over the window, in random order, so
that thousands of clients do not reconnect to the other replicas in the same
second. ``settled()`` waits until every spread callback ran.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class Draining:
    def __init__(self, spread_seconds: float = 0.0) -> None:
        self._callbacks: set[Callable[[], None]] = set()
        self.started = False
        self.spread_seconds = spread_seconds
        self._scheduled = 0
        self._idle: asyncio.Event | None = None

    def on_drain(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when shutdown begins (at once if it already has); returns the unregister function."""
        if self.started:
            callback()
            return lambda: None
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    def begin(self) -> None:
        if self.started:
            return
        self.started = True
        callbacks, self._callbacks = self._callbacks, set()
        self.spread(list(callbacks))

    def spread(self, callbacks: list[Callable[[], None]]) -> None:
        """Call each of ``callbacks``: at once, or spread over the lame-duck window in random order."""
        if self.spread_seconds <= 0 or len(callbacks) < 2:
            for callback in callbacks:
                callback()
            return
        random.shuffle(callbacks)
        loop = asyncio.get_running_loop()
        step = self.spread_seconds / len(callbacks)
        self._scheduled += len(callbacks)
        for i, callback in enumerate(callbacks):
            loop.call_later(i * step, self._run, callback)

    def _run(self, callback: Callable[[], None]) -> None:
        self._scheduled -= 1
        try:
            callback()
        finally:
            if self._scheduled == 0 and self._idle is not None:
                self._idle.set()

    async def settled(self) -> None:
        """Return once every callback spread over the window has run."""
        if self._scheduled == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()
