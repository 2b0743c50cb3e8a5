"""The MQTT listener: a thin asyncio TCP server and the state its connections share.

``MqttContext`` is built once per process from the ``Services`` (no module-level
state): it owns the JetStream store of the MQTT front-end, the live
connections, and the map from session (user, app, client id) to the connection
holding it, which is how a second connection with the same client id takes the
session over [MQTT-3.1.4-2], also across replicas. When the bus connection
drops, it tells every connection (``bus_interrupted``: QoS 1 subscribers on the
hub's core tier are closed). ``MqttServer`` listens on
``FLOWGATE_MQTT_PORT``; each accepted socket gets an ``asyncio.Protocol`` of a
few lines that forwards bytes to its ``MqttConnection`` and maps the
transport's flow-control callbacks. Shutdown stops accepting, closes every
connection and waits for them up to the grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.bus import BusState
from gateway.bus.mqtt_store import MqttStore
from gateway.services import Services
from gateway.settings import Settings
from protocols.mqtt.connection import MqttConnection, Wire
from protocols.mqtt.properties import ReasonCode

log = logging.getLogger("flowgate.mqtt")

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
        self.connections: set[MqttConnection] = set()
        self._sessions: dict[str, MqttConnection] = {}
        self._wills: dict[str, asyncio.Task[None]] = {}  # MQTT 5 delayed wills, by session
        store.on_takeover(self._on_remote_takeover)
        services.bus.add_listener(self._on_bus_state)

    async def take_over(self, key: str, conn: MqttConnection) -> None:
        """Make ``conn`` the holder of session ``key``; close an older holder here or on any replica."""
        old = self._sessions.get(key)
        self._sessions[key] = conn
        will = self._wills.pop(key, None)
        if will is not None:  # the session resumed within the Will Delay Interval: no will [MQTT-3.1.3-9]
            will.cancel()
        if old is not None and old is not conn:
            old.abort("session taken over by a new connection", will=True, code=ReasonCode.SESSION_TAKEN_OVER)
            try:
                async with asyncio.timeout(TAKEOVER_WAIT):
                    await old.wait_closed()
            except TimeoutError:
                log.warning("mqtt %s did not close in time for the takeover", old.id)
        await self.store.announce_takeover(key, conn.id)

    def delay_will(self, key: str, delay: float, send: Callable[[], Awaitable[None]]) -> None:
        """Publish a will after ``delay`` seconds unless session ``key`` is taken up again here first."""

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._wills.get(key) is task:
                del self._wills[key]
            await send()

        old = self._wills.pop(key, None)
        if old is not None:
            old.cancel()
        task = self._wills[key] = asyncio.get_running_loop().create_task(later(), name=f"mqtt-will-{key}")

    def release(self, conn: MqttConnection) -> None:
        key = conn.session_key
        if key is not None and self._sessions.get(key) is conn:
            del self._sessions[key]

    def _on_remote_takeover(self, key: str, owner: str) -> None:
        conn = self._sessions.get(key)
        if conn is not None and conn.id != owner:
            conn.abort("session taken over on another replica", will=True, code=ReasonCode.SESSION_TAKEN_OVER)

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
            conn.abort("server shutting down", will=False, code=ReasonCode.SERVER_SHUTTING_DOWN)
        if not connections:
            return
        _, pending = await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in connections], timeout=grace)
        for conn in connections:
            if not conn.closed.is_set():
                conn.cancel()
        for task in pending:
            task.cancel()


class _TcpProtocol(asyncio.Protocol):
    __slots__ = ("_conn", "_ctx")

    def __init__(self, ctx: MqttContext) -> None:
        self._ctx = ctx
        self._conn: MqttConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        wire: Wire = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        self._conn = MqttConnection(self._ctx, wire, f"{peer[0]}:{peer[1]}" if peer else "?")

    def data_received(self, data: bytes) -> None:
        assert self._conn is not None
        self._conn.data_received(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._conn.connection_lost()

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._conn.pause_writing()

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._conn.resume_writing()


class MqttServer:
    """The MQTT front-end of one process: TCP listener plus the shared context (also used by ``/mqtt``)."""

    def __init__(self, ctx: MqttContext) -> None:
        self.ctx = ctx
        self._server: asyncio.Server | None = None

    @classmethod
    async def open(cls, services: Services) -> MqttServer:
        store = await MqttStore.open(services.bus)
        return cls(MqttContext(services, store, MqttConfig.from_settings(services.settings)))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        settings = self.ctx.services.settings
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpProtocol(self.ctx), host=settings.host, port=settings.mqtt_port, backlog=1024
        )
        log.info("MQTT listening on %s:%d", settings.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, close every connection, wait up to the shutdown grace period."""
        if self._server is not None:
            self._server.close()
        await self.ctx.close(self.ctx.services.settings.shutdown_grace_seconds)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
