"""Connection events and presence: the one narrow interface every front-end calls.

A front-end calls ``ConnectionEvents.connected`` once a client is admitted and
gets a ``Session``; it tells the session about ``subscribed``/``unsubscribed``
filters and, once, ``closed(reason)``. Nothing here is on the publish path:
calls are synchronous and only queue work (bounded; the oldest is dropped when
NATS cannot keep up), which one background task carries out in order:

- an event message on a reserved topic of the client's namespace
  (``$events/connected``, ``$events/disconnected``, ``$events/subscribed``,
  ``$events/unsubscribed``, ``$events/slow-consumer``, ``$events/auth-failure``),
  stored in JetStream like any message, so SSE, WebSocket, MQTT, queues and
  webhooks can consume it (not billed);
- ``$presence/<topic>`` join and leave events for subscriptions to a topic
  without wildcards;
- the connection's presence entry (``gateway.events.presence``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.bus import Bus
from gateway.errors import FlowGateError
from gateway.events.presence import Presence, Present
from gateway.hub import Hub
from gateway.payload import Kind, Payload
from gateway.settings import Settings
from gateway.topics import Namespace, is_wildcard

log = logging.getLogger("flowgate.events")

EVENTS = "$events"
PRESENCE = "$presence"
RESERVED = (EVENTS + "/", PRESENCE + "/")
MAX_QUEUED = 10_000
MAX_INFO_BYTES = 1024
DRAIN_SECONDS = 2.0

Job = Coroutine[Any, Any, None]


def parse_info(raw: str | None) -> Any:
    """A client's ``info`` (a JSON object of at most 1 KB given at connect time), or ``None`` if absent or invalid."""
    if not raw or len(raw) > MAX_INFO_BYTES:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class Session:
    """One client connection, from admission to close."""

    __slots__ = ("_closed", "_events", "client_id", "connected_at", "filters", "id", "info", "namespace", "protocol")

    def __init__(
        self, events: ConnectionEvents, namespace: Namespace, protocol: str, client_id: str, info: Any
    ) -> None:
        self._events = events
        self.id = secrets.token_hex(8)
        self.namespace = namespace
        self.protocol = protocol
        self.client_id = client_id
        self.info = info
        self.connected_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.filters: list[str] = []
        self._closed = False

    def present(self) -> Present:
        return Present(
            self.client_id, self.protocol, self.connected_at, tuple(self.filters), self.info, self._events.replica
        )

    def fields(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": self.client_id,
            "protocol": self.protocol,
            "connected_at": self.connected_at,
            "replica": self._events.replica,
        }
        if self.info is not None:
            body["info"] = self.info
        return body

    def subscribed(self, filters: Iterable[str]) -> None:
        added = [f for f in filters if f not in self.filters]
        if self._closed or not added:
            return
        self.filters.extend(added)
        self._events.emit(self, "subscribed", filters=added)
        self._events.presence_changed(self, joined=added)

    def unsubscribed(self, filters: Iterable[str]) -> None:
        removed = [f for f in filters if f in self.filters]
        if self._closed or not removed:
            return
        self.filters = [f for f in self.filters if f not in removed]
        self._events.emit(self, "unsubscribed", filters=removed)
        self._events.presence_changed(self, left=removed)

    def auth_failure(self, reason: str) -> None:
        """The client was refused something its token does not allow (it stays connected)."""
        if not self._closed:
            self._events.emit(self, "auth-failure", reason=reason)

    def closed(self, reason: str = "closed") -> None:
        """The connection ended (idempotent); a reason starting with "slow consumer" also emits slow-consumer."""
        if self._closed:
            return
        self._closed = True
        if reason.startswith("slow consumer"):
            self._events.emit(self, "slow-consumer", reason=reason)
        self._events.emit(self, "disconnected", reason=reason, filters=list(self.filters))
        self._events.presence_changed(self, left=list(self.filters), gone=True)


class ConnectionEvents:
    def __init__(self, settings: Settings, bus: Bus, hub: Hub, presence: Presence) -> None:
        self._settings = settings
        self._bus = bus
        self._hub = hub
        self.presence = presence
        self.replica = presence.replica
        self._jobs: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued or being recorded
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sessions: dict[str, Session] = {}  # open here, by id
        self._restored = False
        self.dropped = 0

    @classmethod
    async def open(cls, settings: Settings, bus: Bus, hub: Hub) -> ConnectionEvents:
        presence = await Presence.open(bus, secrets.token_hex(4), settings.presence_heartbeat_seconds)
        return cls(settings, bus, hub, presence)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat(), name="presence heartbeat"),
            loop.create_task(self._work(), name="connection events"),
        ]

    async def close(self) -> None:
        """Record what is still queued (the connections closed at shutdown), for up to ``DRAIN_SECONDS``."""
        heartbeat, worker = self._tasks or (None, None)
        if heartbeat is not None:
            heartbeat.cancel()
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(self._idle.wait(), DRAIN_SECONDS)
            except TimeoutError:
                log.warning("%d connection events not recorded at shutdown", len(self._jobs))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- what front-ends call -------------------------------------------------------------------

    def connected(
        self,
        namespace: Namespace,
        protocol: str,
        *,
        client_id: str | None = None,
        info: str | None = None,
        filters: Iterable[str] = (),
    ) -> Session:
        """A client was admitted (``info``: its raw JSON object, if it gave one)."""
        session = Session(
            self, namespace, protocol, client_id or f"{protocol}-{secrets.token_hex(6)}", parse_info(info)
        )
        self._sessions[session.id] = session
        self.emit(session, "connected")
        self._queue(self._put_presence(session))
        session.subscribed(filters)
        return session

    def auth_failed(self, namespace: Namespace, protocol: str, reason: str, *, client_id: str | None = None) -> None:
        """A client of ``namespace`` was refused (a token for another app, a forbidden subscription...)."""
        fields = {"protocol": protocol, "reason": reason, "replica": self.replica}
        if client_id is not None:
            fields["client_id"] = client_id
        self._queue(self._publish(namespace, f"{EVENTS}/auth-failure", {"event": "auth-failure", **fields}))

    # -- queued work ------------------------------------------------------------------------------

    def emit(self, session: Session, event: str, **extra: Any) -> None:
        body = {"event": event, **session.fields(), **extra, "at": _now()}
        self._queue(self._publish(session.namespace, f"{EVENTS}/{event}", body))

    def presence_changed(
        self, session: Session, *, joined: Iterable[str] = (), left: Iterable[str] = (), gone: bool = False
    ) -> None:
        for action, filters in (("join", joined), ("leave", left)):
            for topic_filter in filters:
                if not is_wildcard(topic_filter):
                    body = {"event": action, "topic": topic_filter, **session.fields(), "at": _now()}
                    self._queue(self._publish(session.namespace, f"{PRESENCE}/{topic_filter}", body))
        if gone:
            self._sessions.pop(session.id, None)
            self._queue(self.presence.remove(session.namespace, session.id))
        else:
            self._queue(self._put_presence(session))

    def _queue(self, job: Job) -> None:
        if len(self._jobs) >= MAX_QUEUED:
            self._jobs.popleft().close()
            self.dropped += 1
        self._jobs.append(job)
        self._idle.clear()
        self._wake.set()

    async def _put_presence(self, session: Session) -> None:
        await self.presence.put(session.namespace, session.id, session.present())

    async def _publish(self, namespace: Namespace, topic: str, body: dict[str, Any]) -> None:
        subject = namespace.subject(topic)
        payload = Payload(orjson.dumps(body), Kind.JSON)
        ack = await self._bus.publish(subject, payload, headers=payload.headers)
        if not ack.duplicate:
            self._hub.published(subject, namespace, topic, payload, 1)  # this process's core-tier subscribers

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._jobs:
                job = self._jobs.popleft()
                try:
                    await job
                except FlowGateError as exc:
                    log.warning("connection event not recorded: %s", exc.message)
                except Exception:  # a bug must not stop the events of every later connection
                    log.exception("connection event not recorded")
            self._idle.set()

    async def _heartbeat(self) -> None:
        interval = self._settings.presence_heartbeat_seconds
        first = True
        while True:
            try:
                gone, reaped = await self.presence.beat()
                if reaped and not self._restored:  # taken for dead while alive: write the entries again
                    self._restored = True
                    for session in list(self._sessions.values()):
                        self._queue(self._put_presence(session))
                elif not reaped:
                    self._restored = False
                if first:
                    gone |= await self.presence.orphans()
                    first = False
                for replica in gone:
                    for namespace, present in await self.presence.reap(replica):
                        self._reaped(namespace, present)
            except FlowGateError as exc:
                log.warning("presence heartbeat failed: %s", exc.message)
            await asyncio.sleep(interval)

    def _reaped(self, namespace: Namespace, present: Present) -> None:
        """Leave events for a connection of a replica that died."""
        fields = {**present.public(), "reason": "replica lost", "at": _now()}
        self._queue(self._publish(namespace, f"{EVENTS}/disconnected", {"event": "disconnected", **fields}))
        del fields["filters"]
        for topic_filter in present.filters:
            if not is_wildcard(topic_filter):
                body = {"event": "leave", "topic": topic_filter, **fields}
                self._queue(self._publish(namespace, f"{PRESENCE}/{topic_filter}", body))

    async def subscribed_to(self, namespace: Namespace, topic: str) -> list[dict[str, Any]]:
        """``GET /api/v1/presence``: who is subscribed to ``topic`` now, on every live replica."""
        return [p.public() for p in await self.presence.subscribed(namespace, topic)]


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
