"""Sending: the one send path, batches of up to ``MAX_BATCH`` messages, standard and FIFO.

Each message sent is admitted by the billing guard first (one ``queue_send``
unit; 402 when the quota and balance are spent, 429 beyond the plan's rate),
per entry, so a batch can be partly refused; a refused entry is not stored,
and one that fails to be stored is refunded. A standard message gets a random
message id (and waits in the delayed stream when it has a delay); a FIFO
message is stored once per deduplication id within the window.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from gateway.billing import BillingGuard, Operation
from gateway.bus.queues import WorkQueues, delayed_subject, queue_subject
from gateway.errors import BadRequest, FlowGateError, PayloadTooLarge, Unavailable
from gateway.metrics import Metrics
from gateway.principal import Principal
from gateway.queues import fifo
from gateway.queues.attributes import MAX_DELAY_SECONDS, QueueAttributes
from gateway.queues.catalog import QueueRecord
from gateway.queues.errors import MissingGroupId, TooManyEntries
from gateway.queues.messages import (
    ATTRS_HEADER,
    MAX_BATCH,
    MSG_ID_HEADER,
    NOT_BEFORE_HEADER,
    PROTOCOL,
    SENDER_HEADER,
    SENT_AT_HEADER,
    TRACE_HEADER,
    TYPES_HEADER,
    SendEntry,
    Sent,
    encode_attributes,
    md5_hex,
)
from gateway.queues.records import Records


class Sender:
    def __init__(self, records: Records, wq: WorkQueues, metrics: Metrics, guard: BillingGuard | None) -> None:
        self._records = records
        self._wq = wq
        self._metrics = metrics
        self._guard = guard

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
        short = self._records.name(claims, name, send=True)
        if not entries:
            raise BadRequest("a batch needs at least one entry")
        if len(entries) > MAX_BATCH:
            raise TooManyEntries(f"a batch has at most {MAX_BATCH} entries")
        record = await self._records.catalog.get(claims.namespace, short)
        if record is None and not create:
            record = await self._records.existing(claims, short, fresh=True)
        default = self._records.defaults(short)
        problems = [self._problem(default if record is None else record.attributes, e) for e in entries]
        if all(problems):
            return [p for p in problems if p is not None]  # nothing to store: not even the queue is created
        if record is None:
            record = await self._records.for_send(claims, short)
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
        headers = {MSG_ID_HEADER: message_id, **_headers(claims, entry)}
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
                self._records.catalog.forget(claims.namespace, short)
                record = await self._records.for_send(claims, short, fresh=True)
        raise AssertionError("unreachable")

    async def _store_fifo(self, claims: Principal, record: QueueRecord, entry: SendEntry) -> Sent:
        """Store a FIFO message once per deduplication id (JetStream drops a repeat within the window)."""
        dedup = entry.deduplication_id or fifo.content_dedup_id(entry.payload.body)
        headers = {**_headers(claims, entry), fifo.GROUP_HEADER: entry.group_id or "", fifo.DEDUP_HEADER: dedup}
        seq, _ = await self._wq.publish(queue_subject(record.id), entry.payload, headers, msg_id=f"fifo.{dedup}")
        return Sent(fifo.message_id(record.id, seq), md5_hex(entry.payload.body), seq, False, fifo.sequence_number(seq))


def _headers(claims: Principal, entry: SendEntry) -> dict[str, str]:
    """What every stored message carries: its sender, and the entry's attributes and trace header if any."""
    headers = {SENDER_HEADER: claims.user_id}
    if entry.attributes:
        headers[ATTRS_HEADER] = encode_attributes(entry.attributes)
    if entry.attribute_types:
        headers[TYPES_HEADER] = encode_attributes(entry.attribute_types)
    if entry.trace_header:
        headers[TRACE_HEADER] = entry.trace_header
    return headers
