"""Which replica delivers a batching webhook now: a lease per webhook in KV.

A batching webhook's consumer hands out several messages at once, so two
replicas fetching together could deliver out of order. Only the lease holder
fetches. The lease is a key in ``FG_WEBHOOK_LEASES`` whose entries expire
after ``ttl`` (longer than a delivery's AckWait, so a dead holder's messages
are handed out again before the next holder fetches new ones); the holder
renews it (compare-and-set) before each fetch and again before delivering
what it fetched, so a lease lasts longer than one delivery (``ttl`` exceeds the
request timeout).
"""

from __future__ import annotations

from gateway.bus import Bucket, Bus
from gateway.errors import Conflict

BUCKET = "FG_WEBHOOK_LEASES"


class Leases:
    def __init__(self, bucket: Bucket, ttl: float) -> None:
        self._bucket = bucket
        self.ttl = ttl

    @classmethod
    async def open(cls, bus: Bus, ttl: float) -> Leases:
        return cls(await bus.bucket(BUCKET, ttl=ttl), ttl)

    async def hold(self, webhook_id: str, replica: str) -> bool:
        """Take or renew the lease of ``webhook_id`` for ``replica``; False while another replica holds it."""
        entry = await self._bucket.get(webhook_id)
        try:
            if entry is None:
                await self._bucket.create(webhook_id, replica.encode())
            elif entry.value == replica.encode():
                await self._bucket.update(webhook_id, entry.value, entry.revision)
            else:
                return False
        except Conflict:
            return False
        return True
