"""The real client address of HTTP and WebSocket requests that came through a trusted proxy.

An ASGI middleware in front of the whole app (installed only when
``FLOWGATE_TRUSTED_PROXIES`` is set): when the peer is a trusted proxy, the
scope's ``client`` becomes the address its ``Forwarded`` / ``X-Forwarded-For``
header names, and its ``scheme`` what ``Forwarded: proto=`` / ``X-Forwarded-Proto``
says (``Forwarded``: the client's own hop). Everything downstream (the ``/token`` throttle, logs, MQTT over WebSocket)
reads ``scope["client"]`` as usual. Headers from any other peer are ignored, so
a client cannot pick its own address. uvicorn's own proxy handling is off
(``proxy_headers=False`` in ``flowgate.server``): it trusts 127.0.0.1 by default
and knows no ``Forwarded``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.proxies import TrustedProxies

_SCHEMES = {"http": {"http": "http", "https": "https"}, "websocket": {"http": "ws", "https": "wss"}}


class RealClient:
    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in _SCHEMES and client and self.proxies.trusts(client[0]):
            self._rewrite(scope, client[0])
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope, peer: str) -> None:
        values: dict[bytes, list[str]] = {}
        for name, value in scope["headers"]:
            if name in (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto"):
                values.setdefault(name, []).append(value.decode("latin-1"))
        forwarded = ", ".join(values[b"forwarded"]) if b"forwarded" in values else None
        xff = ", ".join(values[b"x-forwarded-for"]) if b"x-forwarded-for" in values else None
        real = self.proxies.client(peer, forwarded, xff)
        if real is not None:
            scope["client"] = (real.host, real.port)
        if forwarded is not None:
            proto = real.proto if real is not None else None  # the scheme the client used with the first proxy
        elif b"x-forwarded-proto" in values:
            proto = values[b"x-forwarded-proto"][-1].split(",")[-1].strip().lower()  # the nearest proxy's word
        else:
            proto = None
        scheme = _SCHEMES[scope["type"]].get(proto or "")
        if scheme is not None:
            scope["scheme"] = scheme
