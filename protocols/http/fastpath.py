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
Starlette-style ``Request -> Response`` functions, built by their factories
(``publish.endpoint``, ``queues.QueueApi``) and handed to ``serve`` once the
services run; errors take the one mapping in ``protocols.http.errors``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.errors import FlowGateError
from protocols.http import errors, queues
from protocols.http.deps import Handler

Match = tuple[Handler, dict[str, str]]

_QUEUE_PREFIX = queues.PREFIX + "/"


class QueueRouteTable:
    """The queue message routes of ``api`` by path suffix, as Starlette's router would choose among ``queues.routes``."""

    def __init__(self, api: queues.QueueApi) -> None:
        # (method, path suffix) -> handler, for ``{PREFIX}/{queue:path}<suffix>``; no suffix ends another in this table
        self._suffixes: dict[str, tuple[tuple[str, Handler], ...]] = {
            "POST": (
                ("/messages/batch", api.send_batch),
                ("/messages/batch-delete", api.delete_batch),
                ("/messages/receive", api.receive_messages_post),
                ("/messages", api.send_message),
            ),
            "GET": (("/messages", api.receive_messages),),
        }
        # ``{PREFIX}/{queue:path}/messages/{receipt_handle}``
        self._on_handle: dict[str, Handler] = {"DELETE": api.delete_message, "PATCH": api.change_visibility}

    def match(self, method: str, path: str) -> Match | None:
        """The queue message route Starlette's router would pick for ``method`` and ``path``, or None.

        The routes of ``queues.routes`` use ``.*`` for the queue (a name may span
        segments) and ``[^/]+`` for a receipt handle; for these methods the first
        route that matches is the one decided by the path's suffix. A newline is
        left to the router (``.`` does not match it).
        """
        if not path.startswith(_QUEUE_PREFIX) or "\n" in path:
            return None
        rest = path[len(_QUEUE_PREFIX) :]
        for suffix, handler in self._suffixes.get(method, ()):
            if rest.endswith(suffix):
                return handler, {"queue": rest[: -len(suffix)]}
        on_handle = self._on_handle.get(method)
        if on_handle is not None:
            head, _, receipt_handle = rest.rpartition("/")
            if receipt_handle and head.endswith("/messages"):
                return on_handle, {"queue": head[: -len("/messages")], "receipt_handle": receipt_handle}
        return None


class FastPath:
    """The gateway's ASGI application: hot routes straight to their handlers, the rest to ``app``.

    Until ``serve`` hands it the handlers (once the services run), everything goes to ``app``.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app  # the FastAPI app: every route, the lifespan, the OpenAPI document
        self._exact: dict[tuple[str, str], Handler] = {}
        self._queues: QueueRouteTable | None = None

    def serve(self, publish: Handler, queue_api: queues.QueueApi) -> None:
        """Take the hot routes' handlers, built by their factories from the running services."""
        self._exact = {("POST", "/api/v1/publish"): publish}
        self._queues = QueueRouteTable(queue_api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            handler = self._exact.get((method, path))
            if handler is not None:
                await self._handle(handler, scope, receive, send)
                return
            if self._queues is not None and path.startswith(_QUEUE_PREFIX):
                route = self._queues.match(method, path)
                if route is not None:
                    scope["path_params"] = route[1]
                    await self._handle(route[0], scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _handle(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await handler(Request(scope, receive))
        except FlowGateError as exc:
            response = errors.flowgate_error_response(exc)
        except Exception as exc:
            response = errors.unexpected_error_response(exc)
        await response(scope, receive, send)
