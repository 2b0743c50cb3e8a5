"""The queue catalog: each queue's record (name, id, attributes) in a KV bucket.

Key ``<user>.<app>.<sha256(name)[:32]>``; the value is JSON. A queue's ``id``
(random, 16 hex digits) names its stream, so a queue deleted and created again
starts afresh and old receipt handles cannot reach the new one. Replicas agree
through compare-and-set; each caches records for ``cache_seconds``, so a change
made through another replica is seen within that time (its own at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from gateway.bus import Bucket
from gateway.queues.attributes import QueueAttributes
from gateway.topics import Namespace

BUCKET = "fg_queues"


@dataclass(frozen=True, slots=True)
class QueueRecord:
    namespace: Namespace
    name: str  # the short name
    id: str
    attributes: QueueAttributes
    ack_wait: int  # the consumer's AckWait: the visibility timeout that needs no extra nak
    created_at: int
    modified_at: int = 0  # 0: never changed since created_at
    tags: dict[str, str] = field(default_factory=dict)
    purged_at: int = 0  # 0: never purged

    @property
    def full_name(self) -> str:
        return self.namespace.full(self.name)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "user_id": self.namespace.user_id,
                "app": self.namespace.app,
                "name": self.name,
                "id": self.id,
                "attributes": self.attributes.to_json(),
                "ack_wait": self.ack_wait,
                "created_at": self.created_at,
                "modified_at": self.modified_at,
                "tags": self.tags,
                "purged_at": self.purged_at,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> QueueRecord:
        doc = orjson.loads(raw)
        return cls(
            Namespace(doc["user_id"], doc["app"]),
            doc["name"],
            doc["id"],
            QueueAttributes.from_json(doc["attributes"]),
            int(doc["ack_wait"]),
            int(doc["created_at"]),
            int(doc.get("modified_at", 0)),
            dict(doc.get("tags") or {}),
            int(doc.get("purged_at", 0)),
        )


def catalog_key(namespace: Namespace, name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return f"{namespace.user_id}.{namespace.app}.{digest}"


class Catalog:
    def __init__(self, bucket: Bucket, *, cache_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._bucket = bucket
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, QueueRecord | None, int]] = {}
        self._loading: dict[str, asyncio.Task[tuple[QueueRecord | None, int]]] = {}
        self._writes = 0  # bumped by every local write, so that a slower read cannot cache what it missed

    async def get(self, namespace: Namespace, name: str, *, fresh: bool = False) -> QueueRecord | None:
        record, _ = await self.get_with_revision(namespace, name, fresh=fresh)
        return record

    async def get_with_revision(
        self, namespace: Namespace, name: str, *, fresh: bool = False
    ) -> tuple[QueueRecord | None, int]:
        key = catalog_key(namespace, name)
        if fresh:
            return await self._load(key)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1], cached[2]
        task = self._loading.get(key)  # one read per key at a time, however many requests wait for it
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, key: str) -> tuple[QueueRecord | None, int]:
        writes = self._writes
        entry = await self._bucket.get(key)
        record = None if entry is None else QueueRecord.from_bytes(entry.value)
        revision = 0 if entry is None else entry.revision
        if writes == self._writes:
            self._remember(key, record, revision)
        return record, revision

    def _remember(self, key: str, record: QueueRecord | None, revision: int) -> None:
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (self._clock() + self._cache_seconds, record, revision)

    def forget(self, namespace: Namespace, name: str) -> None:
        self._writes += 1
        self._cache.pop(catalog_key(namespace, name), None)

    async def create(self, record: QueueRecord) -> None:
        """Store a new record; ``Conflict`` if the name is taken (another replica was faster)."""
        key = catalog_key(record.namespace, record.name)
        self._writes += 1
        self._cache.pop(key, None)
        revision = await self._bucket.create(key, record.to_bytes())
        self._remember(key, record, revision)

    async def update(self, record: QueueRecord, revision: int) -> None:
        """Replace the record last read at ``revision``; ``Conflict`` if it changed since."""
        key = catalog_key(record.namespace, record.name)
        self._writes += 1
        self._cache.pop(key, None)
        new_revision = await self._bucket.update(key, record.to_bytes(), revision)
        self._remember(key, record, new_revision)

    async def delete(self, record: QueueRecord) -> None:
        key = catalog_key(record.namespace, record.name)
        self._writes += 1
        self._cache.pop(key, None)
        await self._bucket.delete(key)

    async def list(self, namespace: Namespace) -> list[QueueRecord]:
        keys = await self._bucket.keys(f"{namespace.user_id}.{namespace.app}.*")
        entries = await asyncio.gather(*(self._bucket.get(key) for key in keys))
        records = [QueueRecord.from_bytes(entry.value) for entry in entries if entry is not None]
        return sorted(records, key=lambda r: r.name)
