"""``GET /ws``: the WebSocket front-end, a thin ASGI adapter around ``protocols.ws.protocol``.

The token comes in ``?token=`` (browsers cannot set headers on a WebSocket) or
``Authorization: Bearer``. The upgrade is always accepted; a missing, invalid or
expired token is then closed at once with 4401 before any message flows, so a
browser sees why (a refused upgrade only shows it a 1006).

Each accepted client is served by a ``protocols.ws.connection.Connection``.

Billing (``gateway.billing``): a connection counts against the plan's
concurrent connections; when the quota and balance are spent or all of them
are open, the client gets an error frame (code 402) and a close with 4402.
"""

from __future__ import annotations

import itertools

import structlog
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from auth.tokens import bearer
from gateway.errors import FlowGateError, Forbidden, PaymentRequired, Unauthorized
from protocols.services import Services
from protocols.ws.connection import PROTOCOL, Connection
from protocols.ws.protocol import CloseCode, close_code, close_reason, error_frame
from protocols.ws.transport import EXTENSION


class WsEndpoint:
    """The ASGI application mounted at ``/ws``, serving its connections with the ``services`` it is given."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._ids = itertools.count(1)  # connection ids for the logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
            return
        request = HTTPConnection(scope)
        services = self._services
        token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
        try:
            if not token:
                raise Unauthorized("missing token: connect to /ws?token=<JWT>")
            claims = services.tokens.verify(token)
        except (Unauthorized, Forbidden) as exc:  # Forbidden: the user is disabled
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": close_code(exc), "reason": close_reason(exc.message)})
            return
        await send({"type": "websocket.accept"})
        try:
            lease = await services.guard.connect(claims, PROTOCOL)  # billing guard: quota spent or connections used
        except PaymentRequired as exc:
            await send({"type": "websocket.send", "text": error_frame(exc).decode()})
            await send(
                {"type": "websocket.close", "code": CloseCode.PAYMENT_REQUIRED, "reason": close_reason(exc.message)}
            )
            return
        except FlowGateError as exc:  # e.g. the bus is unreachable while the account loads, the user was deleted
            await send({"type": "websocket.send", "text": error_frame(exc).decode()})
            await send({"type": "websocket.close", "code": close_code(exc), "reason": close_reason(exc.message)})
            return
        peer = f"{request.client.host}:{request.client.port}" if request.client else "?"  # behind proxies: the client
        structlog.contextvars.bind_contextvars(
            conn=next(self._ids), user=claims.user_id, app=claims.app, protocol="ws", peer=peer
        )
        direct = scope.get("extensions", {}).get(EXTENSION)
        try:
            events = services.events.connected(claims.namespace, PROTOCOL, info=request.query_params.get("info"))
            await Connection(services, claims, send, direct, events).run(receive)
        finally:
            lease.close()
