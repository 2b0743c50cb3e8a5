"""Durable pull consumers on the message stream, shared by every replica (outgoing webhooks).

A ``DurableConsumer`` is one JetStream consumer that outlives any gateway:
whichever replica fetches gets the next message, and with ``max_ack_pending=1``
the server hands out a message only when the one before it was acknowledged, so
delivery is in order and one replica at a time holds it. A message not
acknowledged within ``ack_wait`` (its replica crashed) goes to the next fetch;
``nak(delay)`` keeps it pending (blocking the ones after it) and delivers it
again after ``delay``.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.bus.core import MESSAGES_STREAM, Bus
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError


@dataclass(frozen=True, slots=True)
class Stored:
    """One message handed out by a ``DurableConsumer``: acknowledge it with ``ack`` or ``nak``."""

    subject: str
    seq: int  # stream sequence
    delivered: int  # delivery count, 1 the first time
    stored_ns: int  # when JetStream stored it, ns since the epoch
    body: bytes
    headers: dict[str, str]
    _msg: Msg

    async def ack(self) -> None:
        """Acknowledge (no confirmation awaited: a lost ack means one more delivery, at least once).

        The next message is handed out once the server processed it (``max_ack_pending=1``).
        """
        with nats_errors("acknowledge a delivery"):
            await self._msg.ack()

    async def nak(self, delay: float) -> None:
        """Deliver again after ``delay`` seconds; the messages after it wait."""
        with nats_errors("retry a delivery later"):
            await self._msg.nak(delay=max(0.0, delay))


class DurableConsumer:
    def __init__(self, js: JetStreamContext, name: str, sub: JetStreamContext.PullSubscription) -> None:
        self.name = name
        self._js = js
        self._sub = sub

    @classmethod
    async def open(
        cls, bus: Bus, name: str, subject: str, *, ack_wait: float, max_ack_pending: int = 1
    ) -> DurableConsumer:
        """Create the consumer if absent (new messages on ``subject`` from now) and bind to it.

        ``max_ack_pending`` above 1 hands out that many at once: then the caller
        keeps the order (one fetcher at a time).
        """
        js = bus.js
        config = api.ConsumerConfig(
            durable_name=name,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            max_deliver=-1,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        with nats_errors(f"create consumer {name}"):
            try:
                await js.consumer_info(MESSAGES_STREAM, name)
            except nats.js.errors.NotFoundError:
                await js.add_consumer(MESSAGES_STREAM, config)
            sub = await js.pull_subscribe_bind(durable=name, stream=MESSAGES_STREAM)
        return cls(js, name, sub)

    async def fetch(self, batch: int, timeout: float) -> list[Stored]:
        """Up to ``batch`` messages: those available now, else the first to come within ``timeout``."""
        with nats_errors(f"fetch from {self.name}"):
            try:
                msgs = await self._sub.fetch(batch, timeout=timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                return []
        out = []
        for msg in msgs:
            meta = msg.metadata
            out.append(
                Stored(
                    msg.subject,
                    meta.sequence.stream,
                    meta.num_delivered or 1,
                    int(meta.timestamp.timestamp() * 1e9) if meta.timestamp else 0,
                    msg.data,
                    {str(k): str(v) for k, v in (msg.headers or {}).items()},
                    msg,
                )
            )
        return out

    async def close(self) -> None:
        """Stop fetching here; the consumer stays for other replicas."""
        try:
            with nats_errors(f"unsubscribe {self.name}"):
                await self._sub.unsubscribe()
        except FlowGateError:
            pass

    @staticmethod
    async def delete(bus: Bus, name: str) -> None:
        """Delete the consumer for every replica; gone already is fine."""
        with nats_errors(f"delete consumer {name}"):
            try:
                await bus.js.delete_consumer(MESSAGES_STREAM, name)
            except nats.js.errors.NotFoundError:
                pass
