"""Work streams for SQS-style queues: one stream and one durable pull consumer per queue.

Owns everything JetStream about queues; the engine in ``gateway.queues`` sees
only ``WorkQueues`` and the names and types of ``queue_types`` (exported here).
Each queue is a work-queue stream ``FGQ_<id>`` on subject ``fg.q.<id>`` with
one durable pull consumer ``worker`` (explicit acks, AckWait = the queue's
default visibility timeout, no delivery limit: redrive is the engine's). An ack
removes the message from the stream, so a deleted message is gone for good.
Delayed sends wait in the shared stream ``FG_QUEUE_DELAYED`` (subject
``fg.qd.<id>``) until the engine's scheduler moves them.

Pulling is ``pulls.Pulls``; acknowledging (and the engine's KV reads on the
same path) is ``queue_acks.QueueAcks``.
"""

from __future__ import annotations

import asyncio

import nats.js.errors
from nats.js import api

from gateway.bus.core import Bus
from gateway.bus.pulls import Pulls
from gateway.bus.queue_acks import QueueAcks
from gateway.bus.queue_types import (
    CONSUMER,
    DELAYED_STREAM,
    DELAYED_SUBJECT_ROOT,
    DeliveryRef,
    OnOrphan,
    Pulled,
    WorkStats,
    delayed_subject,
    parse_ack_subject,
    queue_stream,
    queue_subject,
)
from gateway.bus.translate import nats_errors
from gateway.errors import NotFound
from gateway.payload import Payload

__all__ = [  # the engine's view of the queue streams
    "CONSUMER",
    "DELAYED_STREAM",
    "DeliveryRef",
    "Pulled",
    "WorkQueues",
    "WorkStats",
    "delayed_subject",
    "parse_ack_subject",
    "queue_stream",
    "queue_subject",
]

MAX_IN_FLIGHT = 120_000  # like SQS's in-flight limit of a standard queue
MAX_WAITING_PULLS = 4096


class WorkQueues:
    """Queue streams and their consumers, on the gateway's one NATS connection."""

    def __init__(self, bus: Bus, on_orphan: OnOrphan) -> None:
        self._bus = bus
        self._pulls = Pulls(bus, on_orphan)
        self._acks = QueueAcks(bus)

    async def start(self) -> None:
        await self._acks.start()
        await self._bus.ensure_stream(
            api.StreamConfig(
                name=DELAYED_STREAM,
                subjects=[f"{DELAYED_SUBJECT_ROOT}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_age=float(14 * 86400 + 3600),
                duplicate_window=120.0,
                num_replicas=self._bus.settings.replicas,
            )
        )
        await self._ensure_consumer(DELAYED_STREAM, ack_wait=30, max_ack_pending=1_000_000)

    async def close(self) -> None:
        await self._pulls.close()

    # -- streams -------------------------------------------------------------------------

    async def ensure(
        self, queue_id: str, *, retention_seconds: int, ack_wait: int, duplicate_window: float | None = None
    ) -> None:
        """Create (or update) a queue's stream and consumer; ``duplicate_window`` defaults to the retention."""
        await self._bus.ensure_stream(
            api.StreamConfig(
                name=queue_stream(queue_id),
                subjects=[queue_subject(queue_id)],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_age=float(retention_seconds),
                # Dead-letter moves carry a message id: remember it as long as a message can live.
                duplicate_window=float(retention_seconds) if duplicate_window is None else duplicate_window,
                num_replicas=self._bus.settings.replicas,
            )
        )
        await self._ensure_consumer(queue_stream(queue_id), ack_wait=ack_wait, max_ack_pending=MAX_IN_FLIGHT)

    async def _ensure_consumer(self, stream: str, *, ack_wait: int, max_ack_pending: int) -> None:
        config = api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=float(ack_wait),
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            max_waiting=MAX_WAITING_PULLS,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        with nats_errors(f"create consumer on {stream}"):
            await self._bus.js.add_consumer(stream, config)  # idempotent; updates AckWait when it changed

    async def delete(self, queue_id: str) -> None:
        with nats_errors(f"delete queue stream {queue_id}"):
            try:
                await self._bus.js.delete_stream(queue_stream(queue_id))
            except nats.js.errors.NotFoundError:
                pass
        await self.purge_delayed(queue_id)

    async def purge(self, queue_id: str) -> None:
        stream = queue_stream(queue_id)
        with nats_errors(f"purge queue {queue_id}"):
            await self._bus.js.purge_stream(stream)
        await self._pulls.recount(stream)
        await self.purge_delayed(queue_id)

    async def purge_delayed(self, queue_id: str) -> None:
        with nats_errors(f"purge delayed messages of {queue_id}"):
            await self._bus.js.purge_stream(DELAYED_STREAM, subject=delayed_subject(queue_id))
        await self._pulls.recount(DELAYED_STREAM)

    async def exists(self, queue_id: str) -> bool:
        try:
            with nats_errors(f"read queue stream {queue_id}"):
                await self._bus.js.stream_info(queue_stream(queue_id))
        except NotFound:
            return False
        return True

    async def stats(self, queue_id: str) -> WorkStats:
        js = self._bus.js
        stream = queue_stream(queue_id)
        with nats_errors(f"read queue {queue_id}"):
            info, consumer = await asyncio.gather(js.stream_info(stream), js.consumer_info(stream, CONSUMER))
        return WorkStats(info.state.messages, consumer.num_pending or 0, consumer.num_ack_pending or 0)

    async def delayed_count(self, queue_id: str) -> int:
        subject = delayed_subject(queue_id)
        with nats_errors("read delayed messages"):
            info = await self._bus.js.stream_info(DELAYED_STREAM, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)

    async def message_stored(self, queue_id: str, seq: int) -> bool:
        try:
            with nats_errors(f"read message {seq} of {queue_id}"):
                await self._bus.js.get_msg(queue_stream(queue_id), seq)
        except NotFound:
            return False
        return True

    # -- messages ----------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: Payload, headers: dict[str, str], *, msg_id: str | None = None
    ) -> tuple[int, bool]:
        """Store one message; (stream sequence, whether it was a duplicate of ``msg_id``)."""
        ack = await self._bus.publish(subject, payload, msg_id=msg_id, headers=headers)
        return ack.seq, ack.duplicate

    async def pull_available(self, stream: str, batch: int, *, wait: float) -> list[Pulled]:
        """Up to ``batch`` messages, returning as soon as at least one is available (or after ``wait``)."""
        return await self._pulls.pull_available(stream, batch, wait=wait)

    async def ack(self, stream: str, ref: DeliveryRef) -> None:
        """Acknowledge (and so remove) a message; returns once the server processed it."""
        await self._acks.ack(stream, ref)

    async def nak(self, stream: str, ref: DeliveryRef, *, delay: float = 0.0) -> None:
        """Make a delivered message available again now, or after ``delay`` seconds (still unacknowledged)."""
        await self._acks.nak(stream, ref, delay=delay)

    async def in_progress(self, stream: str, ref: DeliveryRef) -> None:
        """Restart a delivery's AckWait."""
        await self._acks.in_progress(stream, ref)

    async def last_value(self, stream: str, subject: str) -> bytes | None:
        """The last message on ``subject`` in ``stream`` (a KV read), or ``None``; on the pipelined path."""
        return await self._acks.last_value(stream, subject)
