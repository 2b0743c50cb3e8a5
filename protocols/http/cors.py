"""CORS for browser apps on other origins, and the ``Origin`` check of WebSocket handshakes.

One ASGI middleware around the whole app, outside ``FastPath``, so preflights
are answered on every route (the raw publish and queue routes, ``/token``,
queues, admin) before any routing, and every answer a handler, an error
mapping or an SSE stream starts carries the CORS headers. Installed only when
``FLOWGATE_CORS_ORIGINS`` is set; requests without ``Origin`` pass straight
through. HTTP is Starlette's ``CORSMiddleware`` (public API) configured with
the headers Flow-Gate clients send and read. WebSocket handshakes (``/ws``,
``/mqtt``) whose ``Origin`` is neither allowed nor the gateway's own (the
``Host`` the request was sent to) are refused with 403 before the endpoint
runs; clients that send no ``Origin`` (devices, servers) are not
browsers and are not checked.
"""

from __future__ import annotations

import logging

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("flowgate.http")

ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-API-Key")
EXPOSE_HEADERS = ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")
ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_AGE = 3600


class Cors:
    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins
        self.http = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=MAX_AGE,
        )

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            origin, host = _origin_and_host(scope)
            if origin is not None:
                if kind == "http":
                    await self.http(scope, receive, send)
                    return
                if not self.allows(origin) and origin.partition("://")[2] != host:
                    log.info("websocket %s refused: origin %r not allowed", scope["path"], origin)
                    await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
                    return
        await self.app(scope, receive, send)


def _origin_and_host(scope: Scope) -> tuple[str | None, str | None]:
    origin = host = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return origin, host
