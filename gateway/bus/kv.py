"""JetStream key-value buckets behind a small typed wrapper.

Values are bytes; callers encode them. ``update`` is compare-and-set on the
revision, which is how replicas agree on shared state without locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from gateway.bus.translate import nats_errors
from gateway.errors import Conflict


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    revision: int


class Bucket:
    def __init__(self, name: str, kv: KeyValue, js: JetStreamContext) -> None:
        self.name = name
        self._kv = kv
        self._js = js

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context the bucket lives in (for ``gateway.bus.kv_watch``)."""
        return self._js

    async def get(self, key: str) -> Entry | None:
        """The current value, or ``None`` when the key is absent or deleted."""
        with nats_errors(f"read {self.name}/{key}"):
            try:
                entry = await self._kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(key, entry.value, entry.revision)

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` only if ``key`` is absent; raises ``Conflict`` otherwise."""
        with nats_errors(f"create {self.name}/{key}"):
            try:
                return await self._kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                raise
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code == 10071:
                    raise nats.js.errors.KeyWrongLastSequenceError(description=exc.description) from exc
                raise

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Store ``value`` only if ``key`` is still at ``revision``; raises ``Conflict`` otherwise."""
        with nats_errors(f"update {self.name}/{key}"):
            try:
                return await self._kv.update(key, value, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                raise  # a BadRequestError without err_code: nats_errors makes it Conflict
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code == 10071:
                    raise nats.js.errors.KeyWrongLastSequenceError(description=exc.description) from exc
                raise

    async def change_json(self, key: str, change: Callable[[Any], Any], *, attempts: int = 50) -> Any:
        """Read ``key``'s JSON (``None`` when absent), store ``change(value)`` with compare-and-set, return it.

        Retries from the read when another writer came first; ``Conflict`` after ``attempts`` tries.
        """
        for _ in range(attempts):
            entry = await self.get(key)
            value = change(None if entry is None else orjson.loads(entry.value))
            try:
                if entry is None:
                    await self.create(key, orjson.dumps(value))
                else:
                    await self.update(key, orjson.dumps(value), entry.revision)
            except Conflict:
                continue
            return value
        raise Conflict(f"{self.name}/{key} is too busy; retry")

    async def put(self, key: str, value: bytes) -> int:
        with nats_errors(f"write {self.name}/{key}"):
            return await self._kv.put(key, value)

    async def delete(self, key: str) -> None:
        with nats_errors(f"delete {self.name}/{key}"):
            await self._kv.purge(key)

    async def keys(self, pattern: str = ">") -> list[str]:
        """Keys matching a NATS-style pattern (``*`` one token, ``>`` the rest), filtered by the server.

        The answer may include keys deleted since (their delete marker is still
        stored): callers read each key with ``get``, which returns ``None`` for
        those. One stream-info request, no consumer: nats-py's ``keys()`` matches
        substrings on the client, and its watcher can signal "no more keys"
        before delivering the first one when a key arrives during its set-up.
        """
        prefix = f"$KV.{self.name}."
        with nats_errors(f"list {self.name}"):
            info = await self._js.stream_info(f"KV_{self.name}", subjects_filter=prefix + pattern)
        return [subject[len(prefix) :] for subject in (info.state.subjects or {})]

    async def history(self, key: str) -> list[Entry]:
        """The stored values of ``key``, oldest first (as many as the bucket's ``history`` keeps)."""
        with nats_errors(f"read history of {self.name}/{key}"):
            try:
                entries = await self._kv.history(key)
            except nats.js.errors.NoKeysError:
                return []
        return [Entry(key, e.value, e.revision) for e in entries if e.value and e.revision is not None]
