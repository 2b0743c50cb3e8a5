"""Telling long-lived streams that the server is shutting down.

uvicorn's graceful shutdown waits for in-flight responses, but an SSE stream
never finishes by itself: it would hold shutdown up for the whole grace period
and then be cancelled. Streams register a callback here; the server calls
``begin()`` as its shutdown starts, and each stream ends cleanly (its client
reconnects, to another replica if need be, and resumes from its last id).
"""

from __future__ import annotations

from collections.abc import Callable


class Draining:
    def __init__(self) -> None:
        self._callbacks: set[Callable[[], None]] = set()
        self.started = False

    def on_drain(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when shutdown begins (at once if it already has); returns the unregister function."""
        if self.started:
            callback()
            return lambda: None
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    def begin(self) -> None:
        self.started = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()
