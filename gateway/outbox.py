"""A subscriber connection's bounded outbound buffer.

A client that stops reading must not grow the server's memory: when its
``Outbox`` is full it is marked overflowed, and the front-end closes the
connection with its documented slow-consumer code (the client resumes from the
last sequence it saw). Deliveries reach an outbox through ``FilteredSink``s
(``gateway.sinks``) whose receiver is ``tagged``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway.payload import Delivery

T = TypeVar("T")


class SlowConsumer(Exception):
    """The outbox overflowed: its client is not reading fast enough."""


class Outbox(Generic[T]):
    def __init__(self, maxsize: int, on_overflow: Callable[[], None] | None = None) -> None:
        """``on_overflow`` runs once, when the first item is refused (e.g. to close a writer stuck on a socket)."""
        self.maxsize = maxsize
        self._on_overflow = on_overflow
        self._items: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> bool:
        """Queue ``item``; on overflow mark the outbox and return False (the item is not queued)."""
        if self.closed or self.overflowed:
            return False
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            self._items.clear()  # nobody will read them: free the memory now
            self._wakeup.set()
            if self._on_overflow is not None:
                self._on_overflow()
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def get(self, timeout: float | None = None) -> T | None:
        """The next item; ``None`` on timeout or once closed; raises ``SlowConsumer`` after an overflow."""
        while not self._items:
            if self.overflowed:
                raise SlowConsumer
            if self.closed:
                return None
            self._wakeup.clear()
            if timeout is None:  # the hot path of a writer: no timer to arm and cancel per message
                await self._wakeup.wait()
                continue
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                return None
        if self.overflowed:
            raise SlowConsumer
        return self._items.popleft()

    def drain(self, limit: int) -> list[T]:
        """Up to ``limit`` queued items without waiting (for batching writes)."""
        count = min(limit, len(self._items))
        return [self._items.popleft() for _ in range(count)]


def tagged(outbox: Outbox[tuple[object, Delivery]], tag: object = None) -> Callable[[Delivery], None]:
    """A ``FilteredSink`` receiver queueing each delivery in ``outbox`` with ``tag``.

    The tag tells a connection which of its subscriptions a message belongs to.
    """

    def receive(delivery: Delivery) -> None:
        outbox.push((tag, delivery))

    return receive
