"""Who is connected and subscribed now, across replicas, in JetStream KV.

``FG_PRESENCE`` holds one entry per connection, keyed
``<user>.<app>.<replica>.<connection>``: client id, protocol, connected since,
the client's ``info`` and its topic filters. ``FG_PRESENCE_REPLICAS`` holds a
heartbeat per replica, put every ``FLOWGATE_PRESENCE_HEARTBEAT`` seconds into a
bucket whose entries expire after three beats: the entries of a replica whose
heartbeat is gone (it crashed) are not reported, and the first surviving
replica to notice reaps them (``reaped`` hands them to the caller for leave
events) and deletes them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from gateway.bus import Bucket, Bus
from gateway.errors import FlowGateError
from gateway.sinks import Interest
from gateway.topics import Namespace

log = logging.getLogger("flowgate.presence")

BUCKET = "FG_PRESENCE"
REPLICAS_BUCKET = "FG_PRESENCE_REPLICAS"


@dataclass(frozen=True, slots=True)
class Present:
    """One connection as presence reports it."""

    client_id: str
    protocol: str
    connected_at: str
    filters: tuple[str, ...]
    info: Any
    replica: str

    def public(self) -> dict[str, Any]:
        body = asdict(self)
        body["filters"] = list(self.filters)
        if self.info is None:
            del body["info"]
        return body

    def encode(self) -> bytes:
        return orjson.dumps(self.public())

    @classmethod
    def decode(cls, raw: bytes) -> Present:
        body = orjson.loads(raw)
        return cls(
            body["client_id"],
            body["protocol"],
            body["connected_at"],
            tuple(body.get("filters", ())),
            body.get("info"),
            body["replica"],
        )


def entry_key(namespace: Namespace, replica: str, connection: str) -> str:
    return f"{namespace.user_id}.{namespace.app}.{replica}.{connection}"


class Presence:
    def __init__(self, entries: Bucket, replicas: Bucket, replica: str) -> None:
        self._entries = entries
        self._replicas = replicas
        self.replica = replica
        self._alive: set[str] = set()

    @classmethod
    async def open(cls, bus: Bus, replica: str, heartbeat: float) -> Presence:
        entries = await bus.bucket(BUCKET)
        replicas = await bus.bucket(REPLICAS_BUCKET, ttl=3 * heartbeat)
        return cls(entries, replicas, replica)

    async def put(self, namespace: Namespace, connection: str, present: Present) -> None:
        await self._entries.put(entry_key(namespace, self.replica, connection), present.encode())

    async def remove(self, namespace: Namespace, connection: str) -> None:
        await self._entries.delete(entry_key(namespace, self.replica, connection))

    async def beat(self) -> tuple[set[str], bool]:
        """This replica's heartbeat; the replicas that were alive before and are gone now, and whether
        this one was taken for dead (its heartbeat came too late: its entries were reaped)."""
        await self._replicas.put(self.replica, b"1")
        keys = set(await self._replicas.keys())
        alive = {key for key in keys if not key.startswith("reaped-")}
        gone, self._alive = self._alive - alive, alive | {self.replica}
        return gone, f"reaped-{self.replica}" in keys

    async def alive(self) -> set[str]:
        return {key for key in await self._replicas.keys() if not key.startswith("reaped-")} | {self.replica}

    async def subscribed(self, namespace: Namespace, topic: str) -> list[Present]:
        """The connections of live replicas subscribed to a filter matching ``topic``."""
        alive = await self.alive()
        out = []
        for key in await self._entries.keys(f"{namespace.user_id}.{namespace.app}.*.*"):
            if key.split(".")[2] not in alive:
                continue
            entry = await self._entries.get(key)
            if entry is None:
                continue
            present = Present.decode(entry.value)
            if Interest(present.filters).wants(topic):
                out.append(present)
        return sorted(out, key=lambda p: (p.connected_at, p.client_id))

    async def reap(self, replica: str) -> list[tuple[Namespace, Present]]:
        """Delete a dead replica's entries (once, whichever replica gets there first); what they were."""
        try:
            await self._replicas.create(f"reaped-{replica}", b"1")
        except FlowGateError:
            return []  # another replica reaps it
        out = []
        for key in await self._entries.keys(f"*.*.{replica}.*"):
            entry = await self._entries.get(key)
            if entry is not None:
                user_id, app = key.split(".")[:2]
                out.append((Namespace(user_id, app), Present.decode(entry.value)))
            await self._entries.delete(key)
        return out

    async def orphans(self) -> set[str]:
        """Replicas with entries but no heartbeat (found at start-up: they died before this one watched)."""
        alive = await self.alive()
        return {key.split(".")[2] for key in await self._entries.keys()} - alive
