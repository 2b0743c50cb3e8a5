"""A caller's queues: names checked against its token, records looked up, created and changed.

A queue's short name lives in the caller's namespace; sending and changing a
queue's attributes need the token's ``publish`` rule to allow it, receiving
and settling messages its ``subscribe`` rule (``Records.name``). A
queue is created by its first send (once, however many sends race and on
whichever replica) or explicitly; a record changes by compare-and-set.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.bus.queues import WorkQueues
from gateway.errors import Conflict, Forbidden, Unavailable
from gateway.principal import Principal
from gateway.queues import fifo
from gateway.queues.attributes import QueueAttributes
from gateway.queues.catalog import Catalog, QueueRecord, catalog_key
from gateway.queues.errors import QueueNotFound

log = logging.getLogger("flowgate.queues")

DEFAULT_ACK_WAIT = 30


class Records:
    def __init__(self, catalog: Catalog, wq: WorkQueues, max_message_bytes: int) -> None:
        self.catalog = catalog
        self._wq = wq
        self._max_message_bytes = max_message_bytes
        self._creating: dict[str, asyncio.Task[QueueRecord]] = {}

    @staticmethod
    def name(claims: Principal, name: str, *, send: bool = False, receive: bool = False) -> str:
        """``name``'s short form in the caller's namespace; ``Forbidden`` unless the token may ``send``/``receive``."""
        short = claims.namespace.topic(name)
        if send and not claims.permissions.publish.permits_topic(short):
            raise Forbidden(f"this token may not send to queue {short!r}")
        if receive and not claims.permissions.subscribe.permits_topic(short):
            raise Forbidden(f"this token may not receive from queue {short!r}")
        return short

    async def existing(self, claims: Principal, short: str, *, fresh: bool = False) -> QueueRecord:
        record = await self.catalog.get(claims.namespace, short, fresh=fresh)
        if record is None:
            raise QueueNotFound(f"queue {claims.namespace.full(short)!r} does not exist")
        return record

    def defaults(self, short: str) -> QueueAttributes:
        """A new queue's attributes: a name ending in ``.fifo`` makes a FIFO queue."""
        default = QueueAttributes.default(self._max_message_bytes)
        return replace(default, fifo_queue=True) if short.endswith(fifo.NAME_SUFFIX) else default

    async def create(
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
            await self.catalog.create(record)
        except Conflict:
            await self._wq.delete(queue_id)
            existing = await self.catalog.get(claims.namespace, short, fresh=True)
            if existing is None:
                raise Unavailable("queue was created and deleted concurrently; retry") from None
            return existing
        log.info("created queue %s", record.full_name)
        return record

    async def for_send(self, claims: Principal, short: str, *, fresh: bool = False) -> QueueRecord:
        """The queue's record, creating the queue with the default attributes if it does not exist."""
        record = await self.catalog.get(claims.namespace, short, fresh=fresh)
        if record is not None:
            return record
        key = catalog_key(claims.namespace, short)
        task = self._creating.get(key)  # concurrent first sends create the queue once
        if task is None:
            task = asyncio.get_running_loop().create_task(self.create(claims, short, self.defaults(short)))
            self._creating[key] = task
            task.add_done_callback(lambda _: self._creating.pop(key, None))
        return await asyncio.shield(task)

    async def update(self, claims: Principal, short: str, change: Callable[[QueueRecord], QueueRecord]) -> QueueRecord:
        """Change a queue's record with compare-and-set."""
        for _ in range(5):
            record, revision = await self.catalog.get_with_revision(claims.namespace, short, fresh=True)
            if record is None:
                raise QueueNotFound(f"queue {claims.namespace.full(short)!r} does not exist")
            updated = change(record)
            try:
                await self.catalog.update(updated, revision)
            except Conflict:
                continue
            return updated
        raise Conflict("the queue changed concurrently; retry")
