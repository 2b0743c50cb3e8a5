"""Counting the HTTP error responses (4xx, 5xx) by status, for ``flowgate_http_errors``.

A pure ASGI wrapper around the whole application, so that the fast paths, the
framework's routes and its own errors (404, 405) are all counted in one place.
The metrics are the running services' (found once the lifespan started them).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics


class ErrorCounter:
    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                metrics = self._metrics()
                if metrics is not None:
                    metrics.http_errors.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting)
