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
transport's flow-control callbacks; its ``Wire`` closes with a lingering close
(``linger.py``), so that the last packets reach a client that is still
sending. With a TLS certificate it also listens on ``FLOWGATE_MQTTS_PORT``
(``gateway.tls``: reloaded certificates, optional client certificates,
``tls_listener``); a plain port of -1 is off. A peer in
``FLOWGATE_TRUSTED_PROXIES`` may start with a PROXY protocol header
(``proxy_protocol``; on the TLS port before the handshake), whose client address
then names the connection. Shutdown stops accepting, closes every connection
and waits for them up to the grace period, then for those still lingering.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from gateway.bus.mqtt_store import MqttStore
from gateway.tls import CertificateReloader, TlsFiles
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.connection import MqttConnection
from protocols.mqtt.context import MqttConfig, MqttContext
from protocols.mqtt.linger import Lingering, LingeringWire
from protocols.mqtt.proxy_protocol import ProxyHeaderReader, ProxyProtocolError
from protocols.mqtt.tls_listener import TlsListener
from protocols.services import Services

log = logging.getLogger("flowgate.mqtt")


class _TcpProtocol(asyncio.Protocol):
    __slots__ = ("_conn", "_ctx", "_lingering", "_peer", "_proxy", "_proxy_timer", "_transport", "_wire")

    def __init__(self, ctx: MqttContext, lingering: Lingering, peer: str | None = None) -> None:
        self._ctx = ctx
        self._lingering = lingering
        self._wire: LingeringWire | None = None  # once the MQTT connection is made
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
        # uvloop's transports are not asyncio.Transport subclasses
        wire = self._wire = LingeringWire(transport, self._lingering)  # type: ignore[arg-type]
        self._conn = MqttConnection(self._ctx, wire, peer)

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None:
            self._proxy_data(data)
            return
        assert self._conn is not None and self._wire is not None
        if self._wire.closed:  # the server closed: dropped while the wire lingers
            self._wire.discarded()
        else:
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
        if self._wire is not None:
            self._wire.peer_closed()
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
        if self._wire is not None:
            self._wire.peer_closed()
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
        self._lingering = Lingering()  # connections closed by the server, still reading what their client sends

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
                partial(conn.abort, CloseCause.SHUTTING_DOWN, "server shutting down")
                for conn in list(self.ctx.connections)
            ]
        )

    async def start(self) -> None:
        settings = self.ctx.services.settings
        loop = asyncio.get_running_loop()
        if settings.mqtt_port != -1:
            self._server = await loop.create_server(
                lambda: _TcpProtocol(self.ctx, self._lingering),
                host=settings.host,
                port=settings.mqtt_port,
                backlog=1024,
                reuse_port=settings.reuse_port or None,  # workers share the port (flowgate/supervisor.py)
            )
            log.info("MQTT listening on %s:%d", settings.host, self.port)
        if settings.tls_cert_file is not None and settings.mqtts_port != -1:
            tls = CertificateReloader(TlsFiles.from_settings(settings, verify_clients=True))
            self._tls_listener = TlsListener(
                lambda peer: _TcpProtocol(self.ctx, self._lingering, peer),
                tls.context,
                self.ctx.proxies,
                self.ctx.config.connect_timeout,
            )
            await self._tls_listener.start(settings.host, settings.mqtts_port, reuse_port=settings.reuse_port)
            log.info("MQTT over TLS listening on %s:%d", settings.host, self._tls_listener.port)

    async def stop(self) -> None:
        """Stop accepting, close every connection, wait up to the shutdown grace period (and then up to
        ``LINGER`` for the last DISCONNECTs to reach clients that were still sending)."""
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        await self.ctx.close(self.ctx.services.settings.shutdown_grace_seconds)
        await self._lingering.wait()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = self._tls_listener = None
