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
transport's flow-control callbacks. With a TLS certificate it also listens on
``FLOWGATE_MQTTS_PORT`` (``gateway.tls``: reloaded certificates, optional client
certificates, ``tls_listener``); a plain port of -1 is off. A peer in
``FLOWGATE_TRUSTED_PROXIES`` may start with a PROXY protocol header
(``proxy_protocol``; on the TLS port before the handshake), whose client address
then names the connection. Shutdown stops accepting, closes every
connection and waits for them up to the grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from gateway.bus import BusState
from gateway.bus.mqtt_store import MqttStore
from gateway.proxies import TrustedProxies
from gateway.services import Services
from gateway.settings import Settings
from gateway.tls import CertificateReloader, TlsFiles
from protocols.mqtt.connection import MqttConnection, Wire
from protocols.mqtt.properties import ReasonCode
from protocols.mqtt.proxy_protocol import ProxyHeaderReader, ProxyProtocolError
from protocols.mqtt.tls_listener import TlsListener

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
        self.proxies = TrustedProxies(services.settings.trusted_proxies)
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
    __slots__ = ("_conn", "_ctx", "_peer", "_proxy", "_proxy_timer", "_transport")

    def __init__(self, ctx: MqttContext, peer: str | None = None) -> None:
        self._ctx = ctx
        self._peer = peer  # known already (the TLS listener read any PROXY header): no header is read here
        self._conn: MqttConnection | None = None
        self._proxy: ProxyHeaderReader | None = None  # reading a trusted proxy's PROXY header
        self._transport: asyncio.BaseTransport | None = None
        self._proxy_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._peer is not None:
            self._connect(transport, self._peer)
            return
        peer = transport.get_extra_info("peername")
        if peer and self._ctx.proxies.trusts(peer[0]):
            self._transport = transport
            self._proxy = ProxyHeaderReader()
            self._proxy_timer = asyncio.get_running_loop().call_later(self._ctx.config.connect_timeout, transport.close)
            return
        self._connect(transport, f"{peer[0]}:{peer[1]}" if peer else "?")

    def _connect(self, transport: asyncio.BaseTransport, peer: str) -> None:
        wire: Wire = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        self._conn = MqttConnection(self._ctx, wire, peer)

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None:
            self._proxy_data(data)
            return
        assert self._conn is not None
        self._conn.data_received(data)

    def _proxy_data(self, data: bytes) -> None:
        assert self._proxy is not None and self._transport is not None and self._proxy_timer is not None
        peer = self._transport.get_extra_info("peername")
        try:
            result = self._proxy.feed(data)
        except ProxyProtocolError as exc:
            log.warning("mqtt connection from proxy %s closed: %s", peer[0], exc)
            self._proxy_timer.cancel()
            self._transport.close()
            return
        if result is None:
            return
        header, rest = result
        self._proxy = None
        self._proxy_timer.cancel()
        client = header.source if header is not None and header.source is not None else peer
        self._connect(self._transport, f"{client[0]}:{client[1]}")
        if rest:
            self.data_received(rest)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
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
        self._tls_listener: TlsListener | None = None

    @classmethod
    async def open(cls, services: Services) -> MqttServer:
        store = await MqttStore.open(services.bus)
        return cls(MqttContext(services, store, MqttConfig.from_settings(services.settings)))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def drain(self) -> None:
        """Shutdown began (``Draining``): stop accepting now, with HTTP, and disconnect the clients (spread
        out over the lame-duck window)."""
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        self.ctx.services.draining.spread(
            [
                partial(conn.abort, "server shutting down", will=False, code=ReasonCode.SERVER_SHUTTING_DOWN)
                for conn in list(self.ctx.connections)
            ]
        )

    async def start(self) -> None:
        settings = self.ctx.services.settings
        loop = asyncio.get_running_loop()
        if settings.mqtt_port != -1:
            self._server = await loop.create_server(
                lambda: _TcpProtocol(self.ctx),
                host=settings.host,
                port=settings.mqtt_port,
                backlog=1024,
                reuse_port=settings.reuse_port or None,  # workers share the port (gateway/supervisor.py)
            )
            log.info("MQTT listening on %s:%d", settings.host, self.port)
        if settings.tls_cert_file is not None and settings.mqtts_port != -1:
            tls = CertificateReloader(TlsFiles.from_settings(settings, verify_clients=True))
            self._tls_listener = TlsListener(
                lambda peer: _TcpProtocol(self.ctx, peer),
                tls.context,
                self.ctx.proxies,
                self.ctx.config.connect_timeout,
            )
            await self._tls_listener.start(settings.host, settings.mqtts_port, reuse_port=settings.reuse_port)
            log.info("MQTT over TLS listening on %s:%d", settings.host, self._tls_listener.port)

    async def stop(self) -> None:
        """Stop accepting, close every connection, wait up to the shutdown grace period."""
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        await self.ctx.close(self.ctx.services.settings.shutdown_grace_seconds)
        if self._server is not None:
            await self._server.wait_closed()
        self._server = self._tls_listener = None
