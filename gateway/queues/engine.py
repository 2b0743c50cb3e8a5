"""The queue engine: every queue operation, protocol-neutral, on top of ``gateway.bus.queues``.

Front-ends (the HTTP API, the SQS wire protocol) only translate their requests
into these calls. Semantics are Amazon SQS's (standard and FIFO queues). The
engine owns the queues themselves (attributes, tags, deletion, purging, moving
messages out of a dead-letter queue) and hands messages to its parts:
``records`` (names checked against the token, queue records), ``sending`` (the
one send path, billed per message) and ``receiving`` (long polls, redrive to a
dead-letter queue, then delete, change visibility or release).
Permissions: sending and changing a queue's attributes need the token's
``publish`` rule to allow the queue's name; receiving, deleting messages and
changing their visibility need its ``subscribe`` rule; purging or deleting a
queue needs both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.billing import BillingGuard
from gateway.bus import Bucket, Bus
from gateway.bus.queues import Pulled, WorkQueues
from gateway.errors import BadRequest, Conflict, FlowGateError
from gateway.metrics import Metrics
from gateway.principal import Principal
from gateway.queues import fifo
from gateway.queues.attributes import QueueAttributes
from gateway.queues.catalog import BUCKET as CATALOG_BUCKET
from gateway.queues.catalog import Catalog, QueueRecord
from gateway.queues.deliveries import BUCKET as DELIVERIES_BUCKET
from gateway.queues.deliveries import TTL_SECONDS, DeliveryStates
from gateway.queues.handles import Signer
from gateway.queues.moves import MoveTask, MoveTasks
from gateway.queues.receiving import Receiver
from gateway.queues.records import Records
from gateway.queues.scheduler import DelayScheduler
from gateway.queues.sending import Sender
from gateway.settings import Settings

log = logging.getLogger("flowgate.queues")


@dataclass(frozen=True, slots=True)
class QueueCounts:
    visible: int
    in_flight: int
    delayed: int


@dataclass(frozen=True, slots=True)
class QueueInfo:
    record: QueueRecord
    counts: QueueCounts


class QueueEngine:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        signer: Signer,
        metrics: Metrics,
        catalog: Catalog,
        deliveries: Bucket,
        guard: BillingGuard | None = None,
        groups: Bucket | None = None,
    ) -> None:
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._wq = WorkQueues(bus, self._on_orphan)
        self._records = Records(catalog, self._wq, settings.max_message_bytes)
        self._scheduler = DelayScheduler(self._wq)
        self._moves = MoveTasks(self._wq, self._origin)
        self._groups = None if groups is None else fifo.FifoGroups(groups)
        states = DeliveryStates(deliveries, self._wq)
        sender = Sender(self._records, self._wq, metrics, guard)
        self._receiver = Receiver(self._records, self._wq, states, self._groups, signer, metrics)
        # The message operations are the parts' own (documented there).
        self.send_messages = sender.send_messages
        self.receive = self._receiver.receive
        self.delete_messages = self._receiver.delete_messages
        self.change_visibility = self._receiver.change_visibility
        self.release = self._receiver.release

    @classmethod
    async def open(
        cls,
        settings: Settings,
        bus: Bus,
        signer: Signer,
        metrics: Metrics,
        *,
        guard: BillingGuard | None = None,
    ) -> QueueEngine:
        catalog = Catalog(await bus.bucket(CATALOG_BUCKET))
        engine = cls(
            settings,
            bus,
            signer,
            metrics,
            catalog,
            await bus.bucket(DELIVERIES_BUCKET, ttl=float(TTL_SECONDS)),
            guard,
            await bus.bucket(fifo.BUCKET, ttl=float(fifo.TTL_SECONDS)),
        )
        await engine._wq.start()
        engine._scheduler.start()
        return engine

    @property
    def max_message_bytes(self) -> int:
        """The gateway's own message size limit (a queue's cannot be larger)."""
        return self._settings.max_message_bytes

    async def close(self) -> None:
        await self._moves.close()
        await self._scheduler.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._wq.close()

    def _on_orphan(self, stream: str, pulled: Pulled) -> None:
        task = asyncio.get_running_loop().create_task(self._receiver.release_unreceived(stream, pulled))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- queues ---------------------------------------------------------------------------------

    async def set_attributes(self, claims: Principal, name: str, changes: dict[str, Any]) -> tuple[QueueRecord, bool]:
        """Create the queue with ``changes`` over the defaults, or change its attributes; (record, created)."""
        short = self._records.name(claims, name, send=True)
        limit = self._settings.max_message_bytes
        for _ in range(5):
            record, revision = await self._records.catalog.get_with_revision(claims.namespace, short, fresh=True)
            base = self._records.defaults(short) if record is None else record.attributes
            attributes = base.updated(changes, max_message_bytes=limit)
            if attributes.fifo_queue and attributes.delay_seconds:
                raise BadRequest("delay_seconds must be 0 for a FIFO queue here (not supported)")
            attributes = await self._checked_redrive(claims, short, attributes)
            if record is None:
                return await self._records.create(claims, short, attributes), True
            if attributes.fifo_queue != record.attributes.fifo_queue:
                raise BadRequest("fifo_queue can only be chosen when the queue is created")
            ack_wait = attributes.visibility_timeout or record.ack_wait
            if (
                ack_wait != record.ack_wait
                or attributes.message_retention_seconds != record.attributes.message_retention_seconds
            ):
                await self._wq.ensure(
                    record.id,
                    retention_seconds=attributes.message_retention_seconds,
                    ack_wait=ack_wait,
                    duplicate_window=fifo.DEDUP_WINDOW_SECONDS if attributes.fifo_queue else None,
                )
            updated = replace(record, attributes=attributes, ack_wait=ack_wait, modified_at=int(time.time()))
            try:
                await self._records.catalog.update(updated, revision)
            except Conflict:
                continue
            return updated, False
        raise Conflict("the queue's attributes changed concurrently; retry")

    async def create_queue(
        self, claims: Principal, name: str, changes: dict[str, Any], tags: dict[str, str] | None = None
    ) -> tuple[QueueRecord, bool]:
        """Create a queue with ``changes`` over the defaults and ``tags``; an existing one is returned unchanged.

        (record, created): the caller compares an existing queue's attributes with what it asked for.
        """
        short = self._records.name(claims, name, send=True)
        existing = await self._records.catalog.get(claims.namespace, short, fresh=True)
        if existing is not None:
            return existing, False
        limit = self._settings.max_message_bytes
        attributes = self._records.defaults(short).updated(changes, max_message_bytes=limit)
        attributes = await self._checked_redrive(claims, short, attributes)
        return await self._records.create(claims, short, attributes, tags), True

    async def queue(self, claims: Principal, name: str) -> QueueRecord:
        """A queue's record; ``QueueNotFound`` if there is none."""
        return await self._records.existing(claims, self._records.name(claims, name), fresh=True)

    async def tag_queue(
        self, claims: Principal, name: str, add: dict[str, str], remove: Sequence[str] = ()
    ) -> QueueRecord:
        """Add (or overwrite) and remove a queue's tags."""
        short = self._records.name(claims, name, send=True)

        def change(record: QueueRecord) -> QueueRecord:
            return replace(record, tags={k: v for k, v in {**record.tags, **add}.items() if k not in remove})

        return await self._records.update(claims, short, change)

    async def dead_letter_sources(self, claims: Principal, name: str) -> list[QueueRecord]:
        """The queues whose redrive policy names this queue as their dead-letter queue."""
        record = await self.queue(claims, name)
        return [
            r
            for r in await self._records.catalog.list(claims.namespace)
            if r.attributes.redrive_policy is not None and r.attributes.redrive_policy.dead_letter_queue == record.name
        ]

    async def _checked_redrive(self, claims: Principal, short: str, attributes: QueueAttributes) -> QueueAttributes:
        policy = attributes.redrive_policy
        if policy is None:
            return attributes
        try:
            dlq = self._records.name(claims, policy.dead_letter_queue, send=True)
        except FlowGateError as exc:
            raise BadRequest(f"redrive_policy.dead_letter_queue: {exc.message}") from None
        if dlq == short:
            raise BadRequest("a queue cannot be its own dead-letter queue")
        if await self._records.catalog.get(claims.namespace, dlq) is None:
            await self._records.create(claims, dlq, QueueAttributes.default(self._settings.max_message_bytes))
        return replace(attributes, redrive_policy=replace(policy, dead_letter_queue=dlq))

    async def get_queue(self, claims: Principal, name: str) -> QueueInfo:
        short = self._records.name(claims, name)
        record = await self._records.existing(claims, short, fresh=True)
        stats, delayed = await asyncio.gather(self._wq.stats(record.id), self._wq.delayed_count(record.id))
        counts = QueueCounts(max(0, stats.stored - stats.unacknowledged), stats.unacknowledged, delayed)
        return QueueInfo(record, counts)

    async def list_queues(self, claims: Principal) -> list[QueueRecord]:
        return await self._records.catalog.list(claims.namespace)

    async def delete_queue(self, claims: Principal, name: str) -> None:
        short = self._records.name(claims, name, send=True, receive=True)
        record = await self._records.existing(claims, short, fresh=True)
        await self._records.catalog.delete(record)
        await self._wq.delete(record.id)
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.forget(record.id)
        log.info("deleted queue %s", record.full_name)

    async def purge(self, claims: Principal, name: str) -> None:
        short = self._records.name(claims, name, send=True, receive=True)
        record = await self._records.existing(claims, short, fresh=True)
        await self._wq.purge(record.id)
        now = int(time.time())
        await self._records.update(claims, short, lambda r: replace(r, purged_at=now))
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.forget(record.id)

    # -- moving messages out of a dead-letter queue ------------------------------------------------

    async def _origin(self, dlq: QueueRecord, name: str) -> QueueRecord | None:
        return await self._records.catalog.get(dlq.namespace, name, fresh=True) if name else None

    async def start_move(
        self, claims: Principal, source: str, destination: str | None = None, rate: int | None = None
    ) -> MoveTask:
        """Move a dead-letter queue's messages to ``destination``, or each back to the queue it came from."""
        short = self._records.name(claims, source, send=True, receive=True)
        record = await self._records.existing(claims, short, fresh=True)
        if not any(
            r.attributes.redrive_policy is not None and r.attributes.redrive_policy.dead_letter_queue == short
            for r in await self._records.catalog.list(claims.namespace)
        ):
            raise BadRequest(f"queue {record.full_name!r} is no queue's dead-letter queue")
        target = None
        if destination is not None:
            target = await self._records.existing(
                claims, self._records.name(claims, destination, send=True), fresh=True
            )
        if rate is not None and not 1 <= rate <= 500:
            raise BadRequest("the rate must be between 1 and 500 messages per second")
        stats = await self._wq.stats(record.id)
        return self._moves.start(record, target, rate, max(0, stats.stored - stats.unacknowledged))

    async def list_moves(self, claims: Principal, source: str) -> list[MoveTask]:
        """The latest move tasks (up to 10, newest first) from a queue, as this replica knows them."""
        return self._moves.list(await self.queue(claims, source))

    def cancel_move(self, claims: Principal, handle: str) -> MoveTask:
        """Stop a running move task of the caller's namespace; ``NotFound`` if there is none with ``handle``."""
        return self._moves.cancel_for(claims.namespace, handle)
