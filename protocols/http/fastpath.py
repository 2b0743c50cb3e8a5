"""A small ASGI dispatcher in front of the FastAPI app: the hot routes without the framework layer.

Under load, FastAPI's middleware stack (error and exception middleware, its
exit-stack and telemetry layers) and Starlette's linear route match cost about
as much CPU as publishing itself. ``FastPath`` looks the hot requests up in a
table and calls their handlers directly:

- ``POST /api/v1/publish``, by exact (method, path);
- the queue message routes ``/api/v1/queues/{queue}/messages...`` (send, batch,
  receive, delete, batch delete, change visibility), by suffix, choosing the
  route Starlette's router would choose (the queue name may contain ``/``).

Everything else (other methods on those paths, every other route, lifespan and
WebSockets) goes to the FastAPI app, which keeps every route too, so the two
paths answer alike and ``/docs`` documents them all. Handlers are the same
Starlette-style ``Request -> Response`` functions; errors take the one mapping
in ``protocols.http.errors``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import FlowGateError
from protocols.http import errors, publish, queues

Handler = Callable[[Request], Awaitable[Response]]
Match = tuple[Handler, dict[str, str]]

EXACT: dict[tuple[str, str], Handler] = {("POST", "/api/v1/publish"): publish.publish}

_QUEUE_PREFIX = queues.PREFIX + "/"
# (method, path suffix) -> handler, for ``{PREFIX}/{queue:path}<suffix>``; no suffix ends another in this table
_QUEUE_SUFFIXES: dict[str, tuple[tuple[str, Handler], ...]] = {
    "POST": (
        ("/messages/batch", queues.send_batch),
        ("/messages/batch-delete", queues.delete_batch),
        ("/messages/receive", queues.receive_messages_post),
        ("/messages", queues.send_message),
    ),
    "GET": (("/messages", queues.receive_messages),),
}
# ``{PREFIX}/{queue:path}/messages/{receipt_handle}``
_QUEUE_HANDLE_ROUTES: dict[str, Handler] = {"DELETE": queues.delete_message, "PATCH": queues.change_visibility}


def match_queue_route(method: str, path: str) -> Match | None:
    """The queue message route Starlette's router would pick for ``method`` and ``path``, or None.

    The routes in ``queues.ROUTES`` use ``.*`` for the queue (a name may span
    segments) and ``[^/]+`` for a receipt handle; for these methods the first
    route that matches is the one decided by the path's suffix. A newline is
    left to the router (``.`` does not match it).
    """
    if not path.startswith(_QUEUE_PREFIX) or "\n" in path:
        return None
    rest = path[len(_QUEUE_PREFIX) :]
    for suffix, handler in _QUEUE_SUFFIXES.get(method, ()):
        if rest.endswith(suffix):
            return handler, {"queue": rest[: -len(suffix)]}
    on_handle = _QUEUE_HANDLE_ROUTES.get(method)
    if on_handle is not None:
        head, _, receipt_handle = rest.rpartition("/")
        if receipt_handle and head.endswith("/messages"):
            return on_handle, {"queue": head[: -len("/messages")], "receipt_handle": receipt_handle}
    return None


class FastPath:
    """The gateway's ASGI application: hot routes straight to their handlers, the rest to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app  # the FastAPI app: every route, the lifespan, the OpenAPI document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            handler = EXACT.get((method, path))
            if handler is not None:
                await self._handle(handler, scope, receive, send)
                return
            if path.startswith(_QUEUE_PREFIX):
                route = match_queue_route(method, path)
                if route is not None:
                    scope["path_params"] = route[1]
                    await self._handle(route[0], scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _handle(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # what Starlette sets: handlers reach the services through it
        try:
            response = await handler(Request(scope, receive))
        except FlowGateError as exc:
            response = errors.flowgate_error_response(exc)
        except Exception as exc:
            response = errors.unexpected_error_response(exc)
        await response(scope, receive, send)
