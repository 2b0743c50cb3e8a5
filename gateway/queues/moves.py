"""Message move tasks: a dead-letter queue's messages sent back to their source queue (or another).

A task moves the messages visible when it runs, in batches of up to 10: each
is published to its destination with a message id derived from where it was
(JetStream deduplicates a repeated move), then acknowledged at the dead-letter
queue. Without a destination a message goes back to the queue it was
dead-lettered from (the ``Fg-Dlq-Source`` header the engine adds when it moves
one). ``rate`` caps messages per second. One task runs per source queue at a
time; tasks live in the replica that started them (SQS keeps the last ten per
queue for listing, so do we, per replica).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.bus.queues import WorkQueues, queue_stream, queue_subject
from gateway.errors import BadRequest, Conflict, FlowGateError, NotFound
from gateway.payload import Payload
from gateway.queues.catalog import QueueRecord
from gateway.queues.messages import NOT_BEFORE_HEADER
from gateway.topics import Namespace

log = logging.getLogger("flowgate.queues")

DLQ_SOURCE_HEADER = "Fg-Dlq-Source"
KEEP = 10


class MoveStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


@dataclass(slots=True)
class MoveTask:
    handle: str
    source: QueueRecord
    destination: QueueRecord | None  # None: each message's original source queue
    rate: int | None
    to_move: int
    started_ms: int
    moved: int = 0
    status: MoveStatus = MoveStatus.RUNNING
    failure: str | None = None
    runner: asyncio.Task[None] | None = field(default=None, repr=False)


Resolve = Callable[[QueueRecord, str], Awaitable[QueueRecord | None]]


class MoveTasks:
    def __init__(self, wq: WorkQueues, resolve: Resolve) -> None:
        self._wq = wq
        self._resolve = resolve  # (dead-letter queue, original source's short name) -> its record
        self._tasks: dict[str, list[MoveTask]] = {}  # source queue id -> its latest tasks, newest first

    def start(self, source: QueueRecord, destination: QueueRecord | None, rate: int | None, to_move: int) -> MoveTask:
        tasks = self._tasks.setdefault(source.id, [])
        if any(t.status in (MoveStatus.RUNNING, MoveStatus.CANCELLING) for t in tasks):
            raise Conflict(f"a message move task is already running for {source.full_name!r}")
        if destination is not None and destination.id == source.id:
            raise BadRequest("the destination must be another queue")
        task = MoveTask(secrets.token_urlsafe(18), source, destination, rate, to_move, int(time.time() * 1000))
        task.runner = asyncio.get_running_loop().create_task(self._run(task))
        tasks.insert(0, task)
        del tasks[KEEP:]
        return task

    def list(self, source: QueueRecord) -> list[MoveTask]:
        return list(self._tasks.get(source.id, []))

    def cancel_for(self, namespace: Namespace, handle: str) -> MoveTask:
        """Ask a running task of ``namespace`` to stop after the message it is moving."""
        for tasks in self._tasks.values():
            for task in tasks:
                if task.handle == handle and task.source.namespace == namespace and task.status is MoveStatus.RUNNING:
                    task.status = MoveStatus.CANCELLING
                    return task
        raise NotFound("no running message move task has this handle")

    async def close(self) -> None:
        runners = [t.runner for tasks in self._tasks.values() for t in tasks if t.runner is not None]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    async def _run(self, task: MoveTask) -> None:
        stream = queue_stream(task.source.id)
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            while task.status is MoveStatus.RUNNING:
                pulled = await self._wq.pull_available(stream, 10, wait=0)
                if not pulled:
                    break
                for index, message in enumerate(pulled):
                    if task.status is not MoveStatus.RUNNING:
                        for rest in pulled[index:]:
                            await self._wq.nak(stream, rest.ref)
                        break
                    origin = message.headers.get(DLQ_SOURCE_HEADER, "")
                    destination = task.destination or await self._resolve(task.source, origin)
                    if destination is None:
                        for rest in pulled[index:]:
                            await self._wq.nak(stream, rest.ref)
                        raise NotFound(f"the source queue {origin or '(unknown)'!r} of a message no longer exists")
                    headers = {
                        k: v
                        for k, v in message.headers.items()
                        if k.startswith("Fg-") and k not in (NOT_BEFORE_HEADER, DLQ_SOURCE_HEADER)
                    }
                    payload = Payload.from_headers(message.body, message.headers)
                    msg_id = f"move.{task.source.id}.{message.ref.stream_seq}"
                    await self._wq.publish(queue_subject(destination.id), payload, headers, msg_id=msg_id)
                    await self._wq.ack(stream, message.ref)
                    task.moved += 1
                    if task.rate is not None:
                        ahead = task.moved / task.rate - (loop.time() - began)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
        except FlowGateError as exc:
            task.status, task.failure = MoveStatus.FAILED, exc.message
            log.warning("message move task from %s failed: %s", task.source.full_name, exc.message)
            return
        task.status = MoveStatus.CANCELLED if task.status is MoveStatus.CANCELLING else MoveStatus.COMPLETED
        log.info("moved %d messages from %s (%s)", task.moved, task.source.full_name, task.status.value.lower())
