"""The fan-out hub: one bus subscription per distinct subject filter per process.

Local clients (SSE streams, WebSocket connections, ...) register a ``Sink`` for
a subject filter; the first one creates the bus subscription, the last one to
leave removes it. Each delivery is handed to every sink of its filter; sinks
must not block (they enqueue into their own bounded buffer).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from gateway.bus import Bus, LiveSubscription
from gateway.payload import Delivery

log = logging.getLogger("flowgate.hub")


class Sink(Protocol):
    def deliver(self, delivery: Delivery) -> None: ...


@dataclass
class _Entry:
    sinks: set[Sink] = field(default_factory=set)
    subscription: LiveSubscription | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Hub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._entries: dict[str, _Entry] = {}

    @property
    def subscription_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.subscription is not None)

    async def add(self, subject_filter: str, sink: Sink) -> None:
        while True:
            entry = self._entries.setdefault(subject_filter, _Entry())
            async with entry.lock:
                if self._entries.get(subject_filter) is not entry:
                    continue  # the last sink left while we waited: start over with a fresh entry
                if entry.subscription is None:
                    try:
                        entry.subscription = await self._bus.subscribe(subject_filter, partial(self._fan_out, entry))
                    finally:
                        if entry.subscription is None and not entry.sinks:
                            del self._entries[subject_filter]  # failed or cancelled: leave nothing behind
                entry.sinks.add(sink)
                return

    async def remove(self, subject_filter: str, sink: Sink) -> None:
        entry = self._entries.get(subject_filter)
        if entry is None:
            return
        async with entry.lock:
            entry.sinks.discard(sink)
            if entry.sinks or entry.subscription is None:
                return
            subscription, entry.subscription = entry.subscription, None
            if self._entries.get(subject_filter) is entry:
                del self._entries[subject_filter]
            await subscription.stop()

    @staticmethod
    def _fan_out(entry: _Entry, delivery: Delivery) -> None:
        sinks = entry.sinks
        if len(sinks) == 1:
            next(iter(sinks)).deliver(delivery)
            return
        for sink in tuple(sinks):  # a copy: a sink may leave while it is handed the message
            sink.deliver(delivery)

    async def close(self) -> None:
        entries, self._entries = self._entries, {}
        for entry in entries.values():
            if entry.subscription is not None:
                await entry.subscription.stop()
