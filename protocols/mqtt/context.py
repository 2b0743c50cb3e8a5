"""What every MQTT connection of one process shares: the services, the session store, the config.

``MqttContext`` is built once per process (``protocols/mqtt/server.py``) and knows
its connections only through the narrow ``Holder`` Protocol below, so this
module sits under ``connection.py`` and nothing here imports it back.
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


class MqttContext:
    def __init__(self, services: Services, store: MqttStore, config: MqttConfig) -> None:
        self.services = services
        self.store = store
        self.config = config
        self.connections: set[Holder] = set()
        self.proxies = TrustedProxies(services.settings.trusted_proxies)
        self._sessions: dict[str, Holder] = {}
        self._wills: dict[str, asyncio.Task[None]] = {}  # MQTT 5 delayed wills, by session
        store.on_takeover(self._on_remote_takeover)
        services.bus.add_listener(self._on_bus_state)

    async def take_over(self, key: str, conn: Holder) -> None:
        """Make ``conn`` the holder of session ``key``; close an older holder here or on any replica."""
        old = self._sessions.get(key)
        self._sessions[key] = conn
        will = self._wills.pop(key, None)
        if will is not None:  # the session resumed within the Will Delay Interval: no will [MQTT-3.1.3-9]
            will.cancel()
        if old is not None and old is not conn:
            old.abort(CloseCause.TAKEN_OVER, "session taken over by a new connection")
            try:
                async with asyncio.timeout(TAKEOVER_WAIT):
                    await old.wait_closed()
            except TimeoutError:
                log.warning("mqtt %s did not close in time for the takeover", old.id)
        await self.store.announce_takeover(key, conn.id)

    def delay_will(self, key: str, delay: float, send: Callable[[], Awaitable[None]], closed: Holder) -> None:
        """Publish the will of ``closed`` after ``delay`` seconds unless session ``key`` is taken up again here
        first. A takeover closes the old holder after the new one holds the session: resumed, the session
        did not end and there is no will [MQTT-3.1.3-9]; started clean, it ended now, and so does the
        delay ("or the Session ends, whichever happens first", 3.1.3.2.2)."""
        holder = self._sessions.get(key)
        if holder is not None and holder is not closed:
            if holder.resuming:
                return
            delay = 0.0

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._wills.get(key) is task:
                del self._wills[key]
            await send()

        old = self._wills.pop(key, None)
        if old is not None:
            old.cancel()
        task = self._wills[key] = asyncio.get_running_loop().create_task(later(), name=f"mqtt-will-{key}")

    def release(self, conn: Holder) -> None:
        key = conn.session_key
        if key is not None and self._sessions.get(key) is conn:
            del self._sessions[key]

    def _on_remote_takeover(self, key: str, owner: str) -> None:
        conn = self._sessions.get(key)
        if conn is not None and conn.id != owner:
            conn.abort(CloseCause.TAKEN_OVER_ELSEWHERE, "session taken over on another replica")

    def _on_bus_state(self, state: BusState) -> None:
        if state is BusState.DISCONNECTED:
            for conn in list(self.connections):
                conn.bus_interrupted()

    async def close(self, grace: float) -> None:
        for will in self._wills.values():
            will.cancel()
        self._wills.clear()
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
