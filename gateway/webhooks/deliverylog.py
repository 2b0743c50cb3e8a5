"""The delivery log of each webhook: its recent attempts in KV, written off the delivery path.

``FG_WEBHOOK_LOG`` keeps the last ``HISTORY`` values of a key per webhook (the
bucket's history). A dispatcher only queues an entry; one task per process
writes them in order, so logging never adds a round trip to a delivery. When
NATS is slow the oldest unwritten entries are dropped (the log is a window on
recent attempts, not a ledger; metrics count every attempt).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import orjson

from gateway.bus import Bucket, Bus
from gateway.errors import FlowGateError

log = logging.getLogger("flowgate.webhooks")

BUCKET = "FG_WEBHOOK_LOG"
HISTORY = 50
MAX_QUEUED = 10_000


class DeliveryLog:
    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=MAX_QUEUED)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, bus: Bus) -> DeliveryLog:
        return cls(await bus.bucket(BUCKET, history=HISTORY, ttl=7 * 86400))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write(), name="webhook delivery log")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(self, webhook_id: str, entry: bytes) -> None:
        self._queue.append((webhook_id, entry))
        self._wake.set()

    async def recent(self, webhook_id: str) -> list[dict[str, object]]:
        """The logged attempts, newest first."""
        return [orjson.loads(e.value) for e in reversed(await self._bucket.history(webhook_id))]

    async def forget(self, webhook_id: str) -> None:
        await self._bucket.delete(webhook_id)

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                webhook_id, entry = self._queue.popleft()
                try:
                    await self._bucket.put(webhook_id, entry)
                except FlowGateError as exc:
                    log.warning("webhook %s: delivery log not written: %s", webhook_id, exc.message)
