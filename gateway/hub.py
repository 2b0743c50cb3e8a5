"""The fan-out hub: one bus subscription per distinct subject filter and tier per process.

Local clients (SSE streams, WebSocket connections, MQTT subscriptions) register
a ``Sink`` (``gateway.sinks``) for a subject filter; the first one creates the bus subscription,
the last one to leave removes it. Each delivery is handed to every sink of its
filter; sinks must not block (they enqueue into their own bounded buffer).

Two tiers:

- **stored** (the default): a JetStream ordered consumer, so every stored
  message reaches the sink once, in order, with its stream sequence, across
  NATS reconnects (SSE, WebSocket, MQTT QoS 2).
- **core** (MQTT subscriptions granted QoS 0 or 1): what this process publishes
  is handed to the sinks right here by the publisher (``published``), found
  through a subject index; what other replicas and NATS clients publish comes
  from a core NATS subscription, which does not echo this process's own
  messages. NATS does no consumer work for them and the gateway parses nothing
  back, which is how mosquitto and EMQX serve clean sessions. A local message
  sent without an acknowledgement (MQTT QoS 0) reaches the sinks as it is
  sent, any other once stored (and not as a deduplicated retry); sequence 0.
  Nothing is replayed after a NATS reconnect: by itself the tier is at most
  once. The MQTT front-end makes it at least once for QoS 1 by closing a
  connection with such a subscription when the bus connection drops
  (``Bus.add_listener``): a clean session ends with its connection, and the
  client reconnects and subscribes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial

from gateway.bus import Bus, CoreSubscription, LiveSubscription
from gateway.payload import Delivery, Payload
from gateway.sinks import Sink
from gateway.subject_index import SubjectIndex
from gateway.topics import Namespace
from gateway.tracing import Tracing

log = logging.getLogger("flowgate.hub")


@dataclass
class _Entry:
    sinks: set[Sink] = field(default_factory=set)
    subscription: LiveSubscription | CoreSubscription | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Hub:
    def __init__(self, bus: Bus, tracing: Tracing | None = None) -> None:
        self._bus = bus
        self._tracing = tracing  # a ``deliver`` span per traced message handed to this process's sinks
        self._entries: dict[str, _Entry] = {}  # stored tier, by subject filter
        self._core: dict[str, _Entry] = {}  # core tier, by subject filter
        self._local: SubjectIndex[_Entry] = SubjectIndex()  # the core-tier entries, for ``published``

    @property
    def subscription_count(self) -> int:
        entries = (*self._entries.values(), *self._core.values())
        return sum(1 for e in entries if e.subscription is not None)

    async def add(self, subject_filter: str, sink: Sink, *, core: bool = False) -> None:
        entries = self._core if core else self._entries
        while True:
            entry = entries.setdefault(subject_filter, _Entry())
            async with entry.lock:
                if entries.get(subject_filter) is not entry:
                    continue  # the last sink left while we waited: start over with a fresh entry
                if entry.subscription is None:
                    fan_out = partial(self._fan_out if self._tracing is None else self._fan_out_traced, entry)
                    try:
                        if core:
                            entry.subscription = await self._bus.subscribe_core(subject_filter, fan_out)
                            self._local.add(subject_filter, entry)
                        else:
                            entry.subscription = await self._bus.subscribe(subject_filter, fan_out)
                    finally:
                        if entry.subscription is None and not entry.sinks:
                            del entries[subject_filter]  # failed or cancelled: leave nothing behind
                entry.sinks.add(sink)
                return

    async def remove(self, subject_filter: str, sink: Sink, *, core: bool = False) -> None:
        entries = self._core if core else self._entries
        entry = entries.get(subject_filter)
        if entry is None:
            return
        async with entry.lock:
            entry.sinks.discard(sink)
            if entry.sinks or entry.subscription is None:
                return
            subscription, entry.subscription = entry.subscription, None
            if entries.get(subject_filter) is entry:
                del entries[subject_filter]
                if core:
                    self._local.remove(subject_filter)
            await subscription.stop()

    def published(
        self,
        subject: str,
        namespace: Namespace,
        topic: str,
        payload: Payload,
        qos: int,
        frames: dict[str, bytes] | None = None,
    ) -> None:
        """A message this process just sent to ``subject``: hand it to the core-tier sinks here.

        ``frames``: renderings the publishing front-end already has (``Delivery.frame``).
        """
        entries = self._local.match(subject)
        if not entries:
            return
        delivery = Delivery(0, namespace, topic, payload, time.time_ns(), qos, frames)
        for entry in entries:
            self._fan_out(entry, delivery)

    def _fan_out_traced(self, entry: _Entry, delivery: Delivery) -> None:
        if delivery.trace is not None and self._tracing is not None:
            subject = delivery.namespace.full(delivery.topic)
            self._tracing.deliver(delivery.trace, subject, delivery.seq, len(entry.sinks))
        self._fan_out(entry, delivery)

    @staticmethod
    def _fan_out(entry: _Entry, delivery: Delivery) -> None:
        sinks = entry.sinks
        for sink in sinks if len(sinks) == 1 else tuple(sinks):  # a copy: a sink may leave while handed it
            try:
                sink.deliver(delivery)
            except Exception:  # a bug in a sink must fail neither the publisher nor the other sinks
                log.exception("local delivery failed for %s", delivery.namespace.full(delivery.topic))

    async def close(self) -> None:
        entries = (*self._entries.values(), *self._core.values())
        self._entries, self._core, self._local = {}, {}, SubjectIndex()
        for entry in entries:
            if entry.subscription is not None:
                await entry.subscription.stop()
