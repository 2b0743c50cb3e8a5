"""The HTTPS and WSS listener: uvicorn's HTTP protocol on one more socket, with our TLS context.

uvicorn takes one SSL context per server and no way to swap it, so the plain
listener stays uvicorn's own and ``GatewayServer.startup`` adds this one to the
same server: the same app, lifespan state and connection set, so shutdown
closes and drains it alike. Its context comes from ``gateway.tls`` (certificate
reload at the next handshake); the request's scheme is ``https``/``wss``
because uvicorn reads it from the transport.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from gateway.settings import Settings
from gateway.tls import CertificateReloader, TlsFiles

log = logging.getLogger("flowgate.http")


class HttpsListener:
    """HTTPS and WSS beside uvicorn's plain listener: its protocol class, its server state, our TLS context."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.host
        self.port = settings.https_port
        self.tls = CertificateReloader(TlsFiles.from_settings(settings, verify_clients=False))

    async def start(self, server: uvicorn.Server) -> asyncio.Server:
        config, loop = server.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]  # as uvicorn's Server.startup builds it
                config=config, server_state=server.server_state, app_state=server.lifespan.state, _loop=loop
            )

        listener = await loop.create_server(
            protocol, host=self.host, port=self.port, ssl=self.tls.context, backlog=config.backlog
        )
        port = listener.sockets[0].getsockname()[1]
        log.info("HTTPS listening on %s:%d", self.host, port)
        return listener
