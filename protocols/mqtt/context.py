"""What every MQTT connection of one process shares: the services, the session store, the config.

``MqttContext`` is built once per process (``protocols/mqtt/server.py``) and knows
its connections only through the narrow ``Holder`` Protocol below, so this
module sits under ``connection.py`` and nothing here imports it back. It keeps
which connection holds each session and takes sessions over (announced to the
other replicas through ``MqttStore``, with whether the new connection resumes
the session), and the MQTT 5 wills waiting for their Will Delay Interval, which
a takeover on any replica decides: dropped when resumed, sent at once when the
session was started clean (``_taken_up``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.bus import BusState
from gateway.bus.mqtt_store import MqttStore
from gateway.proxies import TrustedProxies
from gateway.settings import Settings
from protocols.mqtt.close_causes import CloseCause
from protocols.services import Services

log = logging.getLogger("flowgate.mqtt")


class Holder(Protocol):
    """A live connection as the context sees it (``MqttConnection`` is one)."""

    id: str
    session_key: str | None
    resuming: bool  # its CONNECT resumes the session (Clean Session / Clean Start 0)
    closed: asyncio.Event

    def abort(self, cause: CloseCause, reason: str) -> None: ...

    async def wait_closed(self) -> None: ...

    def bus_interrupted(self) -> None: ...

    def cancel(self) -> None: ...


TOPIC_OVERHEAD = 64 * 1024  # room for the topic and header around a maximal payload
TAKEOVER_WAIT = 5.0


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    max_packet_size: int
    window: int
    outbound_limit: int
    connect_timeout: float = 10.0
    session_expiry: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttConfig:
        return cls(
            max_packet_size=settings.max_message_bytes + TOPIC_OVERHEAD,
            window=settings.mqtt_inflight,
            outbound_limit=settings.outbound_queue_size,
            session_expiry=float(settings.mqtt_session_expiry),
        )


@dataclass(slots=True)
class DelayedWill:
    """An MQTT 5 will waiting for its Will Delay Interval [MQTT-3.1.3-9]."""

    owner: str  # the id of the connection whose will it is
    send: Callable[[], Awaitable[None]]
    task: asyncio.Task[None]


class MqttContext:
    def __init__(self, services: Services, store: MqttStore, config: MqttConfig) -> None:
        self.services = services
        self.store = store
        self.config = config
        self.connections: set[Holder] = set()
        self.proxies = TrustedProxies(services.settings.trusted_proxies)
        self._sessions: dict[str, Holder] = {}
        # sessions whose holder here was taken over on another replica -> whether that connection resumes it,
        # until the holder here has closed (``release``)
        self._moved: dict[str, bool] = {}
        self._wills: dict[str, DelayedWill] = {}  # MQTT 5 delayed wills, by session
        store.on_takeover(self._on_remote_takeover)
        services.bus.add_listener(self._on_bus_state)

    async def take_over(self, key: str, conn: Holder) -> None:
        """Make ``conn`` the holder of session ``key``; close an older holder here or on any replica."""
        old = self._sessions.get(key)
        self._sessions[key] = conn
        self._moved.pop(key, None)  # the newest holder is here: an older one closing asks it (``release``)
        self._taken_up(key, conn.id, conn.resuming)
        if old is not None and old is not conn:
            old.abort(CloseCause.TAKEN_OVER, "session taken over by a new connection")
            try:
                async with asyncio.timeout(TAKEOVER_WAIT):
                    await old.wait_closed()
            except TimeoutError:
                log.warning("mqtt %s did not close in time for the takeover", old.id)
        await self.store.announce_takeover(key, conn.id, resuming=conn.resuming)

    def release(self, conn: Holder) -> bool | None:
        """``conn`` closed and no longer holds its session. Returns whether the connection that took the
        session over from it, here or on another replica, resumes it; ``None``: nobody took it over (or a
        replica that does not say, see ``_on_remote_takeover``)."""
        key = conn.session_key
        if key is None:
            return None
        holder = self._sessions.get(key)
        if holder is conn:
            del self._sessions[key]
            return self._moved.pop(key, None)
        return None if holder is None else holder.resuming

    def delay_will(
        self, key: str, delay: float, send: Callable[[], Awaitable[None]], closed: Holder, resumed: bool | None
    ) -> None:
        """Publish the will of ``closed`` after ``delay`` seconds unless session ``key`` is taken up again
        first. ``resumed`` is what ``release`` said about a connection that took the session over already:
        resumed, the session did not end and there is no will [MQTT-3.1.3-9]; started clean, it ended now,
        and so does the delay ("or the Session ends, whichever happens first", 3.1.3.2.2)."""
        if resumed:
            return
        self._schedule_will(key, closed.id, 0.0 if resumed is False else delay, send)

    def _schedule_will(self, key: str, owner: str, delay: float, send: Callable[[], Awaitable[None]]) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            if self._wills.get(key) is will:
                del self._wills[key]
            await send()

        old = self._wills.pop(key, None)
        if old is not None:
            old.task.cancel()
        task = asyncio.get_running_loop().create_task(later(), name=f"mqtt-will-{key}")
        will = self._wills[key] = DelayedWill(owner, send, task)

    def _taken_up(self, key: str, owner: str, resuming: bool | None) -> None:
        """Connection ``owner``, here or on another replica, took session ``key`` up while a will waits for
        its delay: resumed, the will is not published [MQTT-3.1.3-9]; started clean, the session ended and
        the will goes now (3.1.3.2.2). ``None`` (an older replica did not say): the delay runs on, as before."""
        will = self._wills.get(key)
        if will is None or will.owner == owner or resuming is None:
            return
        if resuming:
            del self._wills[key]
            will.task.cancel()
        else:
            self._schedule_will(key, will.owner, 0.0, will.send)

    def _on_remote_takeover(self, key: str, owner: str, resuming: bool | None) -> None:
        """A replica (this one too) announced that connection ``owner`` holds session ``key`` now.

        An announcement from a replica that predates the ``resuming`` flag counts as neither: a will
        waiting here keeps its delay, as it did before the flag existed."""
        conn = self._sessions.get(key)
        if conn is not None and conn.id == owner:
            return  # this replica's own announcement
        self._taken_up(key, owner, resuming)
        if conn is not None:
            if resuming is not None:
                self._moved[key] = resuming
            conn.abort(CloseCause.TAKEN_OVER_ELSEWHERE, "session taken over on another replica")

    def _on_bus_state(self, state: BusState) -> None:
        if state is BusState.DISCONNECTED:
            for conn in list(self.connections):
                conn.bus_interrupted()

    async def close(self, grace: float) -> None:
        for will in self._wills.values():
            will.task.cancel()
        self._wills.clear()
        self._moved.clear()
        connections = list(self.connections)
        for conn in connections:
            conn.abort(CloseCause.SHUTTING_DOWN, "server shutting down")
        if not connections:
            return
        _, pending = await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in connections], timeout=grace)
        for conn in connections:
            if not conn.closed.is_set():
                conn.cancel()
        for task in pending:
            task.cancel()
