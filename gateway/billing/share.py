"""Replicas tell each other what they spent, so one user's rate limit is one limit.

Every sync interval each replica broadcasts, on core NATS subject
``fg.ctl.billing.share``, the rate tokens each user took on it since the last
message and its open subscriber connections per user. A receiving replica
charges those tokens to its own bucket for the user (``RateLimiter.charge``,
which may go into debt) and counts the connections against the plan's
maximum. The limit is therefore approximate: over any window, N replicas
together accept at most the rate plus one burst per replica, plus what the
others accepted during the last sync interval before it was charged. A replica
not heard from for ``EXPIRE`` intervals no longer counts. A change to a
user's plan, limits or balance is announced at once, so a top-up restores
service on every replica without waiting for the next sync.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from gateway.bus import Bus
from gateway.bus.broadcast import broadcast, listen
from gateway.errors import FlowGateError

log = logging.getLogger("flowgate.billing")

SUBJECT = "billing.share"
EXPIRE = 4  # sync intervals
CHUNK = 2000  # users per message (well under NATS's default 1 MB max_payload)


class LocalState(Protocol):
    """This replica's side of the share (``gateway.billing.peers.Peers``)."""

    @property
    def interval(self) -> float:
        """Seconds between two ``send`` calls (the billing sync interval)."""
        ...

    def now(self) -> float: ...

    def local_connections(self) -> dict[str, int]:
        """Subscriber connections open here, per user."""
        ...

    def apply_remote(self, replica: str, spent: dict[str, int], connections: dict[str, int] | None) -> None:
        """``replica`` spent ``spent`` rate tokens per user and holds ``connections`` (``None``: unchanged)."""
        ...

    def invalidate(self, user_id: str) -> None:
        """The user's plan, limits or balance changed elsewhere: read them again."""
        ...


class RateShare:
    def __init__(self, bus: Bus, guard: LocalState) -> None:
        self.replica = secrets.token_hex(6)
        self._bus = bus
        self._guard = guard
        self._spent: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._stop: Callable[[], Awaitable[None]] | None = None
        self._had_connections = False

    def spent(self, user_id: str, n: int = 1) -> None:
        """The hot path: count one rate token taken here."""
        self._spent[user_id] = self._spent.get(user_id, 0) + n

    async def start(self) -> None:
        self._stop = await listen(self._bus, SUBJECT, self._receive)

    async def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            try:
                await stop()
            except FlowGateError as exc:
                log.debug("rate share unsubscribe: %s", exc)

    async def announce_change(self, user_id: str) -> None:
        """Tell the other replicas at once that a user's plan, limits or balance changed (a top-up)."""
        try:
            await broadcast(self._bus, SUBJECT, orjson.dumps({"replica": self.replica, "changed": [user_id]}))
        except FlowGateError as exc:
            log.debug("rate share broadcast: %s", exc)  # the others notice within one sync interval anyway

    async def send(self) -> None:
        """Broadcast what was spent since the last call (nothing when idle), then expire silent replicas."""
        spent, self._spent = self._spent, {}
        spent = {u: n for u, n in spent.items() if n > 0}
        connections = self._guard.local_connections()
        if spent or connections or self._had_connections:
            # The first message carries the complete connection counts; spend goes in chunks under max_payload.
            users = list(spent)
            chunks = [users[i : i + CHUNK] for i in range(0, len(users), CHUNK)] or [[]]
            for index, chunk in enumerate(chunks):
                message: dict[str, Any] = {"replica": self.replica, "spent": {u: spent[u] for u in chunk}}
                if index == 0:
                    message["connections"] = connections
                try:
                    await broadcast(self._bus, SUBJECT, orjson.dumps(message))
                except FlowGateError as exc:
                    log.debug("rate share broadcast: %s", exc)
                    break
        self._had_connections = bool(connections)
        now = self._guard.now()
        for replica, seen in list(self._seen.items()):
            if now - seen > EXPIRE * self._guard.interval:
                del self._seen[replica]
                self._guard.apply_remote(replica, {}, {})

    def _receive(self, data: bytes) -> None:
        try:
            message: dict[str, Any] = orjson.loads(data)
            replica = str(message["replica"])
            spent = {str(u): int(n) for u, n in message.get("spent", {}).items()}
            raw = message.get("connections")
            connections = None if raw is None else {str(u): int(n) for u, n in raw.items()}
            changed = [str(u) for u in message.get("changed", [])]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("ignoring a malformed rate share message")
            return
        if replica == self.replica:
            return
        for user_id in changed:
            self._guard.invalidate(user_id)
        if changed:
            return
        if connections:
            self._seen[replica] = self._guard.now()
        self._guard.apply_remote(replica, spent, connections)
