"""Receiving and what follows: long polls, visibility, redrive, deletes and releases.

A received message is invisible to other receivers for its visibility timeout
(the consumer's AckWait, or a negative acknowledgement with that delay), then
delivered again with ``receive_count + 1``. A message received more than the
redrive policy's ``max_receive_count`` times is moved to the dead-letter queue
instead of being delivered: published there with a message id derived from the
source message (JetStream deduplicates a repeated move), then acknowledged at
the source. A FIFO queue hands out only what its message groups allow.

Deleting a message, changing its visibility and releasing it take its receipt
handle (``gateway.queues.handles``), which must be the current one: a message
received again since has a newer handle, and the old one is
``StaleReceiptHandle``. A release makes a message visible again without
counting the receive: the client it was handed to went away, or the pull that
fetched it was abandoned before anyone received it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from gateway.bus.queues import DELAYED_STREAM, Pulled, WorkQueues, queue_stream, queue_subject
from gateway.errors import BadRequest, FlowGateError, NotFound, Unavailable
from gateway.metrics import Metrics
from gateway.payload import Payload
from gateway.principal import Principal
from gateway.queues import fifo
from gateway.queues.attributes import MAX_VISIBILITY_TIMEOUT, MAX_WAIT_SECONDS
from gateway.queues.catalog import QueueRecord
from gateway.queues.deliveries import DeliveryState, DeliveryStates
from gateway.queues.errors import InvalidReceiptHandle, QueueNotFound, StaleReceiptHandle, TooManyEntries
from gateway.queues.handles import ReceiptHandle, Signer
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
    ReceivedMessage,
    decode_attributes,
    md5_hex,
)
from gateway.queues.moves import DLQ_SOURCE_HEADER
from gateway.queues.records import Records

log = logging.getLogger("flowgate.queues")


class Receiver:
    def __init__(
        self,
        records: Records,
        wq: WorkQueues,
        states: DeliveryStates,
        groups: fifo.FifoGroups | None,
        signer: Signer,
        metrics: Metrics,
    ) -> None:
        self._records = records
        self._wq = wq
        self._states = states
        self._groups = groups
        self._signer = signer
        self._metrics = metrics

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
        short = self._records.name(claims, name, receive=True)
        if not 1 <= max_messages <= MAX_BATCH:
            raise BadRequest(f"max must be between 1 and {MAX_BATCH}")
        if wait_seconds is not None and not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise BadRequest(f"wait must be between 0 and {MAX_WAIT_SECONDS}")
        if visibility_timeout is not None and not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise BadRequest(f"visibility_timeout must be between 0 and {MAX_VISIBILITY_TIMEOUT}")
        record = await self._records.existing(claims, short)
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
                self._records.catalog.forget(claims.namespace, short)  # deleted through another replica
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
        dlq = await self._records.for_send(claims, policy.dead_letter_queue)
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

    # -- after receiving: each takes a receipt handle and checks it is the current one ----------------

    async def _current(self, claims: Principal, name: str, receipt_handle: str) -> tuple[QueueRecord, ReceiptHandle]:
        short = self._records.name(claims, name, receive=True)
        record = await self._records.existing(claims, short)
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
        short = self._records.name(claims, name, receive=True)
        await self._records.existing(claims, short)
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

    async def release(self, claims: Principal, name: str, messages: Sequence[ReceivedMessage]) -> None:
        """Make received messages visible again without counting the receive (their client went away)."""
        for message in messages:
            record, handle = await self._current(claims, name, message.receipt_handle)
            seq = handle.ref.stream_seq
            state = await self._states.get(record.id, seq)
            skipped = 1 if state is None else state.skipped + 1
            await self._states.put(record.id, seq, DeliveryState(handle.ref.delivered, skipped))
            await self._wq.nak(queue_stream(record.id), handle.ref)

    async def release_unreceived(self, stream: str, pulled: Pulled) -> None:
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
