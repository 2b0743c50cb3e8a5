"""Follow a KV bucket: its current entries first, then every change, in order, from memory on each replica.

A JetStream ordered consumer (ephemeral, in memory, heartbeated; nats-py
recreates it from the next sequence after a gap or a NATS restart) on
``$KV.<bucket>.>`` that starts with the last value of each key. ``start``
returns once the entries stored when it was called have been handed over, so a
replica knows the bucket's state before it serves. Deletes and purges come as
``Change(value=None)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from gateway.bus.kv import Bucket
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError

log = logging.getLogger("flowgate.bus")

OPERATION_HEADER = "KV-Operation"
INITIAL_TIMEOUT = 10.0  # at most this long to read a bucket's entries at start-up


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    value: bytes | None  # None: deleted or purged


class KvWatch:
    def __init__(self, bucket: Bucket, on_change: Callable[[Change], None]) -> None:
        self.bucket = bucket
        self._on_change = on_change
        self._prefix = f"$KV.{bucket.name}."
        self._subscription: Subscription | None = None
        self._caught_up = asyncio.Event()
        self._initial_seq = 0

    async def start(self) -> None:
        js = self.bucket.js
        with nats_errors(f"watch {self.bucket.name}"):
            info = await js.stream_info(f"KV_{self.bucket.name}")
            self._initial_seq = info.state.last_seq if info.state.messages else 0
            if self._initial_seq == 0:
                self._caught_up.set()
            self._subscription = await js.subscribe(
                self._prefix + ">",
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
        try:
            async with asyncio.timeout(INITIAL_TIMEOUT):
                await self._caught_up.wait()
        except TimeoutError:
            log.warning("bucket %s: initial entries not all read in %gs; going on", self.bucket.name, INITIAL_TIMEOUT)

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        operation = (msg.headers or {}).get(OPERATION_HEADER)
        try:
            self._on_change(Change(key, None if operation in ("DEL", "PURGE") else msg.data))
        except (ValueError, TypeError, KeyError):  # one malformed entry must not stop the watch
            log.exception("bucket %s: change of %r not applied", self.bucket.name, key)
        if not self._caught_up.is_set():
            metadata = msg.metadata
            if metadata.num_pending == 0 or metadata.sequence.stream >= self._initial_seq:
                self._caught_up.set()

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        try:
            with nats_errors(f"stop watching {self.bucket.name}"):
                await subscription.unsubscribe()
        except FlowGateError:  # an ephemeral consumer on a connection that is gone: gone with it
            log.debug("unsubscribe of the %s watch failed", self.bucket.name, exc_info=True)
