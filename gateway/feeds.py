"""One subscriber's feed of a subject, shared by the streaming front-ends (SSE, WebSocket).

A live feed joins the fan-out hub (one bus subscription per distinct subject
per process). A feed resuming after a stream sequence (SSE ``Last-Event-ID``,
WebSocket ``since``) reads its own ordered consumer from the stream, which then
continues live: the subscriber sees every later message once, in order, with no
gap and no duplicate. ``gap()`` tells, before the feed opens, whether retention
already removed part of what was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.bus import Bus, LiveSubscription
from gateway.hub import Hub
from gateway.payload import Delivery
from gateway.sinks import Sink


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages from ``requested_seq`` to ``first_available_seq - 1`` are gone (retention)."""

    requested_seq: int
    first_available_seq: int


class Feed:
    def __init__(self, hub: Hub, bus: Bus, subject: str, sink: Sink, since: int | None) -> None:
        self._hub = hub
        self._bus = bus
        self.subject = subject
        self.sink = sink
        self.since = since
        self._own: LiveSubscription | None = None
        self._opened = False
        self._closed = False

    async def gap(self) -> Gap | None:
        """Whether part of a resumed feed was already removed; ``None`` for a live feed or no gap."""
        if self.since is None:
            return None
        bounds = await self._bus.stream_bounds()
        if bounds.first_seq > self.since + 1 and bounds.last_seq >= bounds.first_seq:
            return Gap(self.since + 1, bounds.first_seq)
        return None

    async def open(self) -> None:
        """Start delivering to the sink: from the hub, or from ``since + 1`` on its own consumer."""
        if self.since is None:
            await self._hub.add(self.subject, self.sink)
        else:
            self._own = await self._bus.subscribe(self.subject, self._deliver, start_seq=self.since + 1)
        self._opened = True

    def _deliver(self, delivery: Delivery) -> None:
        self.sink.deliver(delivery)  # looked up each time: a ``FilteredSink`` swaps it when restricted

    async def close(self) -> None:
        """Stop delivering; idempotent."""
        if self._closed or not self._opened:
            self._closed = True
            return
        self._closed = True
        if self._own is not None:
            await self._own.stop()
        else:
            await self._hub.remove(self.subject, self.sink)
