"""Per-message delivery state, kept only for messages JetStream delivered more than once.

JetStream's delivery count also counts deliveries no client saw (a pull
abandoned by a disconnected client, whose messages the engine released). The
state records, per queue message, the delivery count of the latest delivery
handed to a client (``handed_out``) and how many deliveries were not
(``skipped``). Then ``receive_count = delivered - skipped``, and a receipt handle
is current only if it carries ``handed_out``. A message delivered once and
never released has no state: its count is 1 and its first handle is current.
States expire after the longest retention a queue can have.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.bus import Bucket
from gateway.bus.queues import WorkQueues
from gateway.queues.attributes import MAX_RETENTION_SECONDS

BUCKET = "fg_queue_deliveries"
TTL_SECONDS = MAX_RETENTION_SECONDS + 86400


@dataclass(frozen=True, slots=True)
class DeliveryState:
    handed_out: int = 0  # delivery count of the latest delivery a client received; 0 = none recorded
    skipped: int = 0

    @property
    def current(self) -> int:
        """The delivery count a current receipt handle carries."""
        return self.handed_out or 1


class DeliveryStates:
    """States in a KV bucket; reads (one per delete) take the work queues' pipelined path."""

    def __init__(self, bucket: Bucket, work: WorkQueues) -> None:
        self._bucket = bucket
        self._work = work

    @staticmethod
    def _key(queue_id: str, seq: int) -> str:
        return f"{queue_id}.{seq}"

    async def get(self, queue_id: str, seq: int) -> DeliveryState | None:
        value = await self._work.last_value(f"KV_{BUCKET}", f"$KV.{BUCKET}.{self._key(queue_id, seq)}")
        if not value:
            return None
        doc = orjson.loads(value)
        return DeliveryState(int(doc["h"]), int(doc["s"]))

    async def put(self, queue_id: str, seq: int, state: DeliveryState) -> None:
        await self._bucket.put(self._key(queue_id, seq), orjson.dumps({"h": state.handed_out, "s": state.skipped}))

    async def delete(self, queue_id: str, seq: int) -> None:
        await self._bucket.delete(self._key(queue_id, seq))
