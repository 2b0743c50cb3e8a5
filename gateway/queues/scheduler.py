"""Delayed sends: moving messages from ``FG_QUEUE_DELAYED`` into their queue when due.

Every gateway replica runs one loop on the shared durable consumer of the
delayed stream, so replicas share the work and any one of them suffices. A
message that is not due yet is negatively acknowledged with the remaining
delay (JetStream redelivers it then); a due one is published to its queue with
a message id derived from its own (a repeated move is deduplicated) and then
acknowledged. Keeping delayed messages out of the queue's stream means the
queue's delivery count never counts a delay, and the delayed count is exact.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.bus.queues import DELAYED_STREAM, Pulled, WorkQueues, queue_subject
from gateway.errors import FlowGateError, Unavailable
from gateway.payload import Payload
from gateway.queues.messages import MSG_ID_HEADER, NOT_BEFORE_HEADER

log = logging.getLogger("flowgate.queues")

BATCH = 64
POLL_SECONDS = 10.0
RETRY_SECONDS = 1.0


class DelayScheduler:
    def __init__(self, work: WorkQueues) -> None:
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="queue-delay-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                pulled = await self._work.pull_available(DELAYED_STREAM, BATCH, wait=POLL_SECONDS)
                await asyncio.gather(*(self._handle(p) for p in pulled))
            except FlowGateError as exc:
                log.warning("delayed-message scheduler: %s; retrying", exc.message)
                await asyncio.sleep(RETRY_SECONDS)

    async def _handle(self, pulled: Pulled) -> None:
        headers = pulled.headers
        raw = headers.get(NOT_BEFORE_HEADER, "0")
        not_before_ms = int(raw) if raw.isdigit() else 0
        remaining = not_before_ms / 1000 - time.time()
        if remaining > 0:
            await self._work.nak(DELAYED_STREAM, pulled.ref, delay=remaining)
            return
        queue_id = pulled.subject.rsplit(".", 1)[-1]
        moved = {k: v for k, v in headers.items() if k.startswith("Fg-") and k != NOT_BEFORE_HEADER}
        payload = Payload.from_headers(pulled.body, headers)
        msg_id = f"delayed.{headers.get(MSG_ID_HEADER) or pulled.ref.stream_seq}"
        try:
            await self._work.publish(queue_subject(queue_id), payload, moved, msg_id=msg_id)
        except Unavailable:
            if await self._work.exists(queue_id):
                await self._work.nak(DELAYED_STREAM, pulled.ref, delay=RETRY_SECONDS)
                return
            log.info("dropping a delayed message of deleted queue %s", queue_id)
        await self._work.ack(DELAYED_STREAM, pulled.ref)
