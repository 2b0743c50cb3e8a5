"""The publishes of one ``/ws`` connection sent to JetStream and not yet acknowledged.

The reader waits for ``room`` before it sends another (at most ``MAX_IN_FLIGHT``
pending), and a ``ping`` is answered once the publishes are ``settled`` (every
one sent before it has its outcome).
"""

from __future__ import annotations

import asyncio

MAX_IN_FLIGHT = 256  # publishes of one connection awaiting JetStream's acknowledgement


class PendingPublishes:
    __slots__ = ("_count", "_limit", "room", "settled")

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        self._count = 0
        self._limit = limit
        self.room = asyncio.Event()  # set while fewer than ``limit`` publishes are pending
        self.room.set()
        self.settled = asyncio.Event()  # set while no publish is pending
        self.settled.set()

    def sent(self) -> None:
        self._count += 1
        self.settled.clear()
        if self._count >= self._limit:
            self.room.clear()

    def answered(self) -> None:
        self._count -= 1
        self.room.set()
        if self._count == 0:
            self.settled.set()
