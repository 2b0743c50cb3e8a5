"""The queue engine: every queue operation, protocol-neutral, on top of ``gateway.bus.queues``.

Front-ends (the HTTP API, later the SQS wire protocol) only translate their
requests into these calls. Permissions: sending and changing a queue's
attributes need the token's ``publish`` rule to allow the queue's name;
receiving, deleting messages and changing their visibility need its
``subscribe`` rule; purging or deleting a queue needs both.

Semantics (Amazon SQS standard queues): a received message is invisible to
other receivers for its visibility timeout (the consumer's AckWait, or a
negative acknowledgement with that delay), then delivered again with
``receive_count + 1``. A message received more than the redrive policy's
``max_receive_count`` times is moved to the dead-letter queue instead of being
delivered: published there with a message id derived from the source message
(JetStream deduplicates a repeated move), then acknowledged at the source.
``send_messages`` is the one send path (single sends are a batch of one).
Each message sent is admitted by the billing guard first (one ``queue_send``
unit; 402 when the quota and balance are spent, 429 beyond the plan's rate),
per entry, so a batch can be partly refused; a refused entry is not stored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.billing import BillingGuard, Operation
from gateway.bus import Bucket, Bus
from gateway.bus.queues import (
    DELAYED_STREAM,
    Pulled,
    WorkQueues,
    delayed_subject,
    queue_stream,
    queue_subject,
)
from gateway.errors import BadRequest, Conflict, FlowGateError, Forbidden, NotFound, PayloadTooLarge, Unavailable
from gateway.metrics import Metrics
from gateway.payload import Payload
from gateway.principal import Principal, TopicRule
from gateway.queues import fifo
from gateway.queues.attributes import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT, MAX_WAIT_SECONDS, QueueAttributes
from gateway.queues.catalog import BUCKET as CATALOG_BUCKET
from gateway.queues.catalog import Catalog, QueueRecord, catalog_key
from gateway.queues.deliveries import BUCKET as DELIVERIES_BUCKET
from gateway.queues.deliveries import TTL_SECONDS, DeliveryState, DeliveryStates
from gateway.queues.errors import (
    InvalidReceiptHandle,
    MissingGroupId,
    QueueNotFound,
    StaleReceiptHandle,
    TooManyEntries,
)
from gateway.queues.handles import ReceiptHandle, Signer
from gateway.queues.messages import (
    ATTRS_HEADER,
    MAX_BATCH,
    MSG_ID_HEADER,
    NOT_BEFORE_HEADER,
    SENDER_HEADER,
    SENT_AT_HEADER,
    TRACE_HEADER,
    TYPES_HEADER,
    ReceivedMessage,
    SendEntry,
    Sent,
    decode_attributes,
    encode_attributes,
    md5_hex,
)
from gateway.queues.moves import DLQ_SOURCE_HEADER, MoveTask, MoveTasks
from gateway.queues.scheduler import DelayScheduler
from gateway.settings import Settings

log = logging.getLogger("flowgate.queues")

DEFAULT_ACK_WAIT = 30
PROTOCOL = "queue"


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
        self._guard = guard
        self._signer = signer
        self._metrics = metrics
        self._catalog = catalog
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating: dict[str, asyncio.Task[QueueRecord]] = {}
        self._wq = WorkQueues(bus, self._on_orphan)
        self._states = DeliveryStates(deliveries, self._wq)
        self._scheduler = DelayScheduler(self._wq)
        self._moves = MoveTasks(self._wq, self._origin)
        self._groups = None if groups is None else fifo.FifoGroups(groups)

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

    # -- names, permissions and records ---------------------------------------------------

    @staticmethod
    def _name(claims: Principal, name: str, *rules: tuple[str, TopicRule]) -> str:
        short = claims.namespace.topic(name)
        for what, rule in rules:
            if not rule.permits_topic(short):
                raise Forbidden(f"this token may not {what} queue {short!r}")
        return short

    @staticmethod
    def _send_rule(claims: Principal) -> tuple[str, TopicRule]:
        return ("send to", claims.permissions.publish)

    @staticmethod
    def _receive_rule(claims: Principal) -> tuple[str, TopicRule]:
        return ("receive from", claims.permissions.subscribe)

    async def _existing(self, claims: Principal, short: str, *, fresh: bool = False) -> QueueRecord:
        record = await self._catalog.get(claims.namespace, short, fresh=fresh)
        if record is None:
            raise QueueNotFound(f"queue {claims.namespace.full(short)!r} does not exist")
        return record

    async def _create(
        self, claims: Principal, short: str, attributes: QueueAttributes, tags: dict[str, str] | None = None
    ) -> QueueRecord:
        """Create a queue, or return the one another replica created first."""
        queue_id = secrets.token_hex(8)
        ack_wait = attributes.visibility_timeout or DEFAULT_ACK_WAIT
        await self._wq.ensure(
            queue_id,
            retention_seconds=attributes.message_retention_seconds,
            ack_wait=ack_wait,
            duplicate_window=fifo.DEDUP_WINDOW_SECONDS if attributes.fifo_queue else None,
        )
        record = QueueRecord(
            claims.namespace, short, queue_id, attributes, ack_wait, int(time.time()), tags=dict(tags or {})
        )
        try:
            await self._catalog.create(record)
        except Conflict:
            await self._wq.delete(queue_id)
            existing = await self._catalog.get(claims.namespace, short, fresh=True)
            if existing is None:
                raise Unavailable("queue was created and deleted concurrently; retry") from None
            return existing
        log.info("created queue %s", record.full_name)
        return record

    def _defaults(self, short: str) -> QueueAttributes:
        """A new queue's attributes: a name ending in ``.fifo`` makes a FIFO queue."""
        default = QueueAttributes.default(self._settings.max_message_bytes)
        return replace(default, fifo_queue=True) if short.endswith(fifo.NAME_SUFFIX) else default

    async def _for_send(self, claims: Principal, short: str, *, fresh: bool = False) -> QueueRecord:
        record = await self._catalog.get(claims.namespace, short, fresh=fresh)
        if record is not None:
            return record
        key = catalog_key(claims.namespace, short)
        task = self._creating.get(key)  # concurrent first sends create the queue once
        if task is None:
            task = asyncio.get_running_loop().create_task(self._create(claims, short, self._defaults(short)))
            self._creating[key] = task
            task.add_done_callback(lambda _: self._creating.pop(key, None))
        return await asyncio.shield(task)

    # -- queues ---------------------------------------------------------------------------------

    async def set_attributes(self, claims: Principal, name: str, changes: dict[str, Any]) -> tuple[QueueRecord, bool]:
        """Create the queue with ``changes`` over the defaults, or change its attributes; (record, created)."""
        short = self._name(claims, name, self._send_rule(claims))
        limit = self._settings.max_message_bytes
        for _ in range(5):
            record, revision = await self._catalog.get_with_revision(claims.namespace, short, fresh=True)
            base = self._defaults(short) if record is None else record.attributes
            attributes = base.updated(changes, max_message_bytes=limit)
            if attributes.fifo_queue and attributes.delay_seconds:
                raise BadRequest("delay_seconds must be 0 for a FIFO queue here (not supported)")
            attributes = await self._checked_redrive(claims, short, attributes)
            if record is None:
                return await self._create(claims, short, attributes), True
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
                await self._catalog.update(updated, revision)
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
        short = self._name(claims, name, self._send_rule(claims))
        existing = await self._catalog.get(claims.namespace, short, fresh=True)
        if existing is not None:
            return existing, False
        limit = self._settings.max_message_bytes
        attributes = self._defaults(short).updated(changes, max_message_bytes=limit)
        attributes = await self._checked_redrive(claims, short, attributes)
        return await self._create(claims, short, attributes, tags), True

    async def queue(self, claims: Principal, name: str) -> QueueRecord:
        """A queue's record; ``QueueNotFound`` if there is none."""
        return await self._existing(claims, self._name(claims, name), fresh=True)

    async def tag_queue(
        self, claims: Principal, name: str, add: dict[str, str], remove: Sequence[str] = ()
    ) -> QueueRecord:
        """Add (or overwrite) and remove a queue's tags."""
        short = self._name(claims, name, self._send_rule(claims))

        def change(record: QueueRecord) -> QueueRecord:
            return replace(record, tags={k: v for k, v in {**record.tags, **add}.items() if k not in remove})

        return await self._update_record(claims, short, change)

    async def _update_record(
        self, claims: Principal, short: str, change: Callable[[QueueRecord], QueueRecord]
    ) -> QueueRecord:
        """Change a queue's record with compare-and-set."""
        for _ in range(5):
            record, revision = await self._catalog.get_with_revision(claims.namespace, short, fresh=True)
            if record is None:
                raise QueueNotFound(f"queue {claims.namespace.full(short)!r} does not exist")
            updated = change(record)
            try:
                await self._catalog.update(updated, revision)
            except Conflict:
                continue
            return updated
        raise Conflict("the queue changed concurrently; retry")

    async def dead_letter_sources(self, claims: Principal, name: str) -> list[QueueRecord]:
        """The queues whose redrive policy names this queue as their dead-letter queue."""
        record = await self.queue(claims, name)
        return [
            r
            for r in await self._catalog.list(claims.namespace)
            if r.attributes.redrive_policy is not None and r.attributes.redrive_policy.dead_letter_queue == record.name
        ]

    async def _checked_redrive(self, claims: Principal, short: str, attributes: QueueAttributes) -> QueueAttributes:
        policy = attributes.redrive_policy
        if policy is None:
            return attributes
        try:
            dlq = self._name(claims, policy.dead_letter_queue, self._send_rule(claims))
        except FlowGateError as exc:
            raise BadRequest(f"redrive_policy.dead_letter_queue: {exc.message}") from None
        if dlq == short:
            raise BadRequest("a queue cannot be its own dead-letter queue")
        if await self._catalog.get(claims.namespace, dlq) is None:
            await self._create(claims, dlq, QueueAttributes.default(self._settings.max_message_bytes))
        return replace(attributes, redrive_policy=replace(policy, dead_letter_queue=dlq))

    async def get_queue(self, claims: Principal, name: str) -> QueueInfo:
        short = self._name(claims, name)
        record = await self._existing(claims, short, fresh=True)
        stats, delayed = await asyncio.gather(self._wq.stats(record.id), self._wq.delayed_count(record.id))
        counts = QueueCounts(max(0, stats.stored - stats.unacknowledged), stats.unacknowledged, delayed)
        return QueueInfo(record, counts)

    async def list_queues(self, claims: Principal) -> list[QueueRecord]:
        return await self._catalog.list(claims.namespace)

    async def delete_queue(self, claims: Principal, name: str) -> None:
        short = self._name(claims, name, self._send_rule(claims), self._receive_rule(claims))
        record = await self._existing(claims, short, fresh=True)
        await self._catalog.delete(record)
        await self._wq.delete(record.id)
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.forget(record.id)
        log.info("deleted queue %s", record.full_name)

    async def purge(self, claims: Principal, name: str) -> None:
        short = self._name(claims, name, self._send_rule(claims), self._receive_rule(claims))
        record = await self._existing(claims, short, fresh=True)
        await self._wq.purge(record.id)
        now = int(time.time())
        await self._update_record(claims, short, lambda r: replace(r, purged_at=now))
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.forget(record.id)

    # -- sending -----------------------------------------------------------------------------------

    async def send_messages(
        self,
        claims: Principal,
        name: str,
        entries: Sequence[SendEntry],
        *,
        protocol: str = PROTOCOL,
        create: bool = True,
    ) -> list[Sent | FlowGateError]:
        """The one send path: store up to 10 messages; per entry, what was stored or why not.

        The queue is created with default attributes if it does not exist (``QueueNotFound`` without ``create``).
        """
        short = self._name(claims, name, self._send_rule(claims))
        if not entries:
            raise BadRequest("a batch needs at least one entry")
        if len(entries) > MAX_BATCH:
            raise TooManyEntries(f"a batch has at most {MAX_BATCH} entries")
        record = await self._catalog.get(claims.namespace, short)
        if record is None and not create:
            record = await self._existing(claims, short, fresh=True)
        default = self._defaults(short)
        problems = [self._problem(default if record is None else record.attributes, e) for e in entries]
        if all(problems):
            return [p for p in problems if p is not None]  # nothing to store: not even the queue is created
        if record is None:
            record = await self._for_send(claims, short)
        valid = [e for e, p in zip(entries, problems, strict=True) if p is None]
        stored = iter(
            await asyncio.gather(
                *(self._send_one(claims, short, record, entry, protocol) for entry in valid), return_exceptions=True
            )
        )
        out: list[Sent | FlowGateError] = []
        for problem in problems:
            result = problem if problem is not None else next(stored)
            if isinstance(result, FlowGateError | Sent):
                out.append(result)
            elif isinstance(result, BaseException):
                raise result
        sent = sum(1 for r in out if isinstance(r, Sent))
        if sent:
            self._metrics.published.labels(protocol).inc(sent)
        return out

    @staticmethod
    def _problem(attributes: QueueAttributes, entry: SendEntry) -> FlowGateError | None:
        """Why ``entry`` cannot be stored in a queue with ``attributes``, if it cannot."""
        limit = attributes.max_message_bytes
        if entry.size > limit:
            return PayloadTooLarge(f"message is {entry.size} bytes with its attributes; the queue's limit is {limit}")
        if entry.delay_seconds is not None and not 0 <= entry.delay_seconds <= MAX_DELAY_SECONDS:
            return BadRequest(f"delay_seconds must be between 0 and {MAX_DELAY_SECONDS}")
        if attributes.fifo_queue:
            if not entry.group_id:
                return MissingGroupId("a FIFO queue's messages need a message group id")
            if entry.delay_seconds:
                return BadRequest("a FIFO queue's messages cannot have their own delay")
            if not entry.deduplication_id and not attributes.content_based_deduplication:
                return BadRequest("a FIFO queue without content-based deduplication needs a message deduplication id")
        elif entry.deduplication_id:
            return BadRequest("only FIFO queues take a message deduplication id")
        return None

    async def _send_one(
        self, claims: Principal, short: str, record: QueueRecord, entry: SendEntry, protocol: str = PROTOCOL
    ) -> Sent:
        problem = self._problem(record.attributes, entry)
        if problem is not None:
            raise problem
        delay = record.attributes.delay_seconds if entry.delay_seconds is None else entry.delay_seconds
        guard = self._guard
        if guard is not None:
            await guard.admit(claims, len(entry.payload.body), protocol=protocol, operation=Operation.QUEUE_SEND)
        try:
            return await self._store(claims, short, record, entry, delay)
        except BaseException:
            if guard is not None:
                guard.refund(claims, operation=Operation.QUEUE_SEND)  # not stored: not billed
            raise

    async def _store(self, claims: Principal, short: str, record: QueueRecord, entry: SendEntry, delay: int) -> Sent:
        if record.attributes.fifo_queue:
            return await self._store_fifo(claims, record, entry)
        message_id = str(uuid.uuid4())
        headers = {MSG_ID_HEADER: message_id, SENDER_HEADER: claims.user_id}
        if entry.attributes:
            headers[ATTRS_HEADER] = encode_attributes(entry.attributes)
        if entry.attribute_types:
            headers[TYPES_HEADER] = encode_attributes(entry.attribute_types)
        if entry.trace_header:
            headers[TRACE_HEADER] = entry.trace_header
        if delay:
            now_ms = int(time.time() * 1000)
            headers[SENT_AT_HEADER] = str(now_ms)
            headers[NOT_BEFORE_HEADER] = str(now_ms + delay * 1000)
        for attempt in range(2):
            subject = delayed_subject(record.id) if delay else queue_subject(record.id)
            try:
                seq, _ = await self._wq.publish(subject, entry.payload, headers)
                return Sent(message_id, md5_hex(entry.payload.body), seq, bool(delay))
            except Unavailable:
                # A stale cached record of a queue deleted through another replica: no stream listens.
                if attempt or await self._wq.exists(record.id):
                    raise
                self._catalog.forget(claims.namespace, short)
                record = await self._for_send(claims, short, fresh=True)
        raise AssertionError("unreachable")

    async def _store_fifo(self, claims: Principal, record: QueueRecord, entry: SendEntry) -> Sent:
        """Store a FIFO message once per deduplication id (JetStream drops a repeat within the window)."""
        dedup = entry.deduplication_id or fifo.content_dedup_id(entry.payload.body)
        headers = {SENDER_HEADER: claims.user_id, fifo.GROUP_HEADER: entry.group_id or "", fifo.DEDUP_HEADER: dedup}
        if entry.attributes:
            headers[ATTRS_HEADER] = encode_attributes(entry.attributes)
        if entry.attribute_types:
            headers[TYPES_HEADER] = encode_attributes(entry.attribute_types)
        if entry.trace_header:
            headers[TRACE_HEADER] = entry.trace_header
        seq, _ = await self._wq.publish(queue_subject(record.id), entry.payload, headers, msg_id=f"fifo.{dedup}")
        return Sent(fifo.message_id(record.id, seq), md5_hex(entry.payload.body), seq, False, fifo.sequence_number(seq))

    # -- receiving ----------------------------------------------------------------------------------

    async def receive(
        self,
        claims: Principal,
        name: str,
        *,
        max_messages: int = 1,
        wait_seconds: int | None = None,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages; with ``wait_seconds`` returns as soon as one is available."""
        short = self._name(claims, name, self._receive_rule(claims))
        if not 1 <= max_messages <= MAX_BATCH:
            raise BadRequest(f"max must be between 1 and {MAX_BATCH}")
        if wait_seconds is not None and not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise BadRequest(f"wait must be between 0 and {MAX_WAIT_SECONDS}")
        if visibility_timeout is not None and not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise BadRequest(f"visibility_timeout must be between 0 and {MAX_VISIBILITY_TIMEOUT}")
        record = await self._existing(claims, short)
        attributes = record.attributes
        vt = attributes.visibility_timeout if visibility_timeout is None else visibility_timeout
        wait = attributes.receive_wait_seconds if wait_seconds is None else wait_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        stream = queue_stream(record.id)
        out: list[ReceivedMessage] = []
        while True:
            remaining = deadline - loop.time()
            try:
                pulled = await self._wq.pull_available(stream, max_messages - len(out), wait=max(0.0, remaining))
            except (Unavailable, NotFound):
                if await self._wq.exists(record.id):
                    raise
                self._catalog.forget(claims.namespace, short)  # deleted through another replica
                raise QueueNotFound(f"queue {record.full_name!r} does not exist") from None
            if record.attributes.fifo_queue and pulled:  # one at a time: moves to a dead-letter queue keep order
                accepted = [
                    await self._accept(claims, record, p, vt) for p in await self._admit_fifo(record, pulled, vt)
                ]
            else:
                accepted = await asyncio.gather(*(self._accept(claims, record, p, vt) for p in pulled))
            out.extend(m for m in accepted if m is not None)
            if out or not pulled:  # all pulled went to the dead-letter queue or wait their turn: look again
                break
        if out:
            self._metrics.delivered.labels(PROTOCOL).inc(len(out))
        return out

    async def _admit_fifo(self, record: QueueRecord, pulled: list[Pulled], vt: int) -> list[Pulled]:
        """The pulled messages their groups allow now; the others go back, not counted as receives."""
        assert self._groups is not None
        admission = await self._groups.admit(record.id, pulled, vt)
        stream = queue_stream(record.id)
        for message, delay in admission.hand_back:
            seq = message.ref.stream_seq
            state = await self._states.get(record.id, seq)
            handed_out = 0 if state is None else state.handed_out
            await self._states.put(
                record.id, seq, DeliveryState(handed_out, (0 if state is None else state.skipped) + 1)
            )
            await self._wq.nak(stream, message.ref, delay=max(0.0, delay))
        return admission.deliver

    async def _accept(self, claims: Principal, record: QueueRecord, pulled: Pulled, vt: int) -> ReceivedMessage | None:
        """Turn a delivery into a received message, or move it to the dead-letter queue."""
        ref = pulled.ref
        seq = ref.stream_seq
        state = None if ref.delivered == 1 else await self._states.get(record.id, seq)
        skipped = 0 if state is None else state.skipped
        receive_count = max(1, ref.delivered - skipped)
        policy = record.attributes.redrive_policy
        if policy is not None and receive_count > policy.max_receive_count:
            await self._dead_letter(claims, record, pulled, had_state=state is not None)
            return None
        if ref.delivered > 1:
            await self._states.put(record.id, seq, DeliveryState(ref.delivered, skipped))
        stream = queue_stream(record.id)
        if vt == 0:
            await self._wq.nak(stream, ref)
        elif vt != record.ack_wait:
            await self._wq.nak(stream, ref, delay=vt)
        headers = pulled.headers
        payload = Payload.from_headers(pulled.body, headers)
        sent_at = headers.get(SENT_AT_HEADER)
        group = headers.get(fifo.GROUP_HEADER)
        return ReceivedMessage(
            message_id=headers.get(MSG_ID_HEADER) or (fifo.message_id(record.id, seq) if group is not None else ""),
            receipt_handle=ReceiptHandle(record.id, ref).encode(self._signer, claims.namespace),
            payload=payload,
            md5_of_body=md5_hex(pulled.body),
            attributes=decode_attributes(headers.get(ATTRS_HEADER)),
            receive_count=receive_count,
            sent_at_ms=int(sent_at) if sent_at and sent_at.isdigit() else ref.timestamp_ns // 1_000_000,
            attribute_types=decode_attributes(headers.get(TYPES_HEADER)),
            sender_id=headers.get(SENDER_HEADER, ""),
            trace_header=headers.get(TRACE_HEADER),
            group_id=group,
            deduplication_id=headers.get(fifo.DEDUP_HEADER),
            sequence_number=fifo.sequence_number(seq) if group is not None else None,
        )

    async def _dead_letter(self, claims: Principal, record: QueueRecord, pulled: Pulled, *, had_state: bool) -> None:
        """Move a message to the dead-letter queue exactly once: deduplicated publish, then ack at the source."""
        policy = record.attributes.redrive_policy
        assert policy is not None
        dlq = await self._for_send(claims, policy.dead_letter_queue)
        headers = {k: v for k, v in pulled.headers.items() if k.startswith("Fg-") and k != NOT_BEFORE_HEADER}
        headers.setdefault(SENT_AT_HEADER, str(pulled.ref.timestamp_ns // 1_000_000))
        headers[DLQ_SOURCE_HEADER] = record.name  # where a move task sends it back
        if fifo.GROUP_HEADER in pulled.headers:
            headers.setdefault(MSG_ID_HEADER, fifo.message_id(record.id, pulled.ref.stream_seq))
        payload = Payload.from_headers(pulled.body, pulled.headers)
        await self._wq.publish(
            queue_subject(dlq.id), payload, headers, msg_id=f"dlq.{record.id}.{pulled.ref.stream_seq}"
        )
        await self._wq.ack(queue_stream(record.id), pulled.ref)
        if had_state:
            await self._states.delete(record.id, pulled.ref.stream_seq)
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.gone(record.id, pulled.ref.stream_seq)
        log.info("moved message %s of %s to %s", headers.get(MSG_ID_HEADER), record.full_name, dlq.full_name)

    # -- after receiving ------------------------------------------------------------------------------

    async def _current(self, claims: Principal, name: str, receipt_handle: str) -> tuple[QueueRecord, ReceiptHandle]:
        short = self._name(claims, name, self._receive_rule(claims))
        record = await self._existing(claims, short)
        handle = ReceiptHandle.decode(receipt_handle, self._signer, claims.namespace)
        if handle.queue_id != record.id:
            raise InvalidReceiptHandle("receipt handle belongs to another queue")
        return record, handle

    async def delete_messages(
        self, claims: Principal, name: str, receipt_handles: Sequence[str]
    ) -> list[FlowGateError | None]:
        """Delete received messages for good; per handle, ``None`` or why not (stale, invalid)."""
        if not receipt_handles:
            raise BadRequest("a batch needs at least one entry")
        if len(receipt_handles) > MAX_BATCH:
            raise TooManyEntries(f"a batch has at most {MAX_BATCH} entries")
        short = self._name(claims, name, self._receive_rule(claims))
        await self._existing(claims, short)
        results = await asyncio.gather(
            *(self._delete_one(claims, short, h) for h in receipt_handles), return_exceptions=True
        )
        out: list[FlowGateError | None] = []
        for result in results:
            if isinstance(result, FlowGateError) or result is None:
                out.append(result)
            elif isinstance(result, BaseException):
                raise result
        return out

    async def _delete_one(self, claims: Principal, short: str, receipt_handle: str) -> None:
        record, handle = await self._current(claims, short, receipt_handle)
        seq = handle.ref.stream_seq
        state = await self._states.get(record.id, seq)
        if state is None and handle.ref.delivered > 1:
            return  # its state goes only with the message: already deleted
        if state is not None and state.current != handle.ref.delivered:
            raise StaleReceiptHandle("the message was received again since; use the latest receipt handle")
        await self._wq.ack(queue_stream(record.id), handle.ref)
        if state is not None:
            await self._states.delete(record.id, seq)
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.gone(record.id, seq)

    async def change_visibility(
        self, claims: Principal, name: str, receipt_handle: str, visibility_timeout: Any
    ) -> None:
        """Make a received message visible again after ``visibility_timeout`` seconds from now (0: at once)."""
        if isinstance(visibility_timeout, bool) or not isinstance(visibility_timeout, int):
            raise BadRequest(f"visibility_timeout must be an integer between 0 and {MAX_VISIBILITY_TIMEOUT}")
        if not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise BadRequest(f"visibility_timeout must be between 0 and {MAX_VISIBILITY_TIMEOUT}")
        record, handle = await self._current(claims, name, receipt_handle)
        seq = handle.ref.stream_seq
        state, stored = await asyncio.gather(self._states.get(record.id, seq), self._wq.message_stored(record.id, seq))
        if not stored or (state is None and handle.ref.delivered > 1):
            raise NotFound("the message is no longer in the queue")
        if state is not None and state.current != handle.ref.delivered:
            raise StaleReceiptHandle("the message was received again since; use the latest receipt handle")
        stream = queue_stream(record.id)
        if record.attributes.fifo_queue and self._groups is not None:
            await self._groups.extend(record.id, seq, visibility_timeout)
        if visibility_timeout == record.ack_wait:
            await self._wq.in_progress(stream, handle.ref)
        else:
            await self._wq.nak(stream, handle.ref, delay=float(visibility_timeout))

    # -- moving messages out of a dead-letter queue ------------------------------------------------

    async def _origin(self, dlq: QueueRecord, name: str) -> QueueRecord | None:
        return await self._catalog.get(dlq.namespace, name, fresh=True) if name else None

    async def start_move(
        self, claims: Principal, source: str, destination: str | None = None, rate: int | None = None
    ) -> MoveTask:
        """Move a dead-letter queue's messages to ``destination``, or each back to the queue it came from."""
        short = self._name(claims, source, self._send_rule(claims), self._receive_rule(claims))
        record = await self._existing(claims, short, fresh=True)
        if not any(
            r.attributes.redrive_policy is not None and r.attributes.redrive_policy.dead_letter_queue == short
            for r in await self._catalog.list(claims.namespace)
        ):
            raise BadRequest(f"queue {record.full_name!r} is no queue's dead-letter queue")
        target = None
        if destination is not None:
            target = await self._existing(claims, self._name(claims, destination, self._send_rule(claims)), fresh=True)
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

    # -- releasing deliveries no client received -------------------------------------------------

    async def release(self, claims: Principal, name: str, messages: Sequence[ReceivedMessage]) -> None:
        """Make received messages visible again without counting the receive (their client went away)."""
        for message in messages:
            record, handle = await self._current(claims, name, message.receipt_handle)
            seq = handle.ref.stream_seq
            state = await self._states.get(record.id, seq)
            skipped = 1 if state is None else state.skipped + 1
            await self._states.put(record.id, seq, DeliveryState(handle.ref.delivered, skipped))
            await self._wq.nak(queue_stream(record.id), handle.ref)

    def _on_orphan(self, stream: str, pulled: Pulled) -> None:
        task = asyncio.get_running_loop().create_task(self._release(stream, pulled))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, stream: str, pulled: Pulled) -> None:
        """Make a delivery nobody received visible again, without counting it as a receive."""
        try:
            if stream != DELAYED_STREAM:
                queue_id = stream.removeprefix("FGQ_")
                seq = pulled.ref.stream_seq
                state = await self._states.get(queue_id, seq)
                skipped = 1 if state is None else state.skipped + 1
                await self._states.put(queue_id, seq, DeliveryState(0 if state is None else state.handed_out, skipped))
            await self._wq.nak(stream, pulled.ref)
        except FlowGateError as exc:
            log.warning("could not release an unreceived delivery of %s: %s", stream, exc.message)
