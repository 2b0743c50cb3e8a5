"""Assembly of the ASGI application: services in the lifespan, routes of every front-end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp

import gateway
from flowgate.services import running_services
from gateway.draining import Draining
from gateway.proxies import TrustedProxies
from gateway.settings import Settings
from protocols.dashboard import routes as dashboard
from protocols.http import (
    admin,
    errors,
    health,
    history,
    keys,
    presence,
    publish,
    queue_docs,
    queues,
    revoke,
    sdk,
    sse,
    stats,
    token,
    triggers,
    usage,
    webhooks,
)
from protocols.http.client_address import RealClient
from protocols.http.cors import Cors
from protocols.http.fastpath import FastPath
from protocols.http.status_metrics import ErrorCounter
from protocols.mqtt.server import MqttServer
from protocols.mqtt.websocket import mqtt_over_websocket
from protocols.services import Services
from protocols.sqs import endpoint as sqs
from protocols.ws.endpoint import WsEndpoint


def create_app(settings: Settings, draining: Draining | None = None) -> ASGIApp:
    """The ASGI app: the FastAPI app with every route, behind the dispatcher for the hot ones
    (and, when configured, CORS and the real client address around both).

    The lifespan starts the services, then each front end's factory builds its
    routes from the services it is handed (``_mount``). ``draining`` is how the
    server tells long-lived streams that shutdown has begun.
    """
    running: list[Services] = []  # the services while the lifespan runs (for the error counter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(settings, draining) as services:
            mqtt = await MqttServer.open(services)
            await mqtt.start()
            services.draining.on_drain(mqtt.drain)  # one shutdown with HTTP (gateway/draining.py)
            app.state.services = services  # for tests and tools looking in; front ends are handed theirs
            _mount(app, fast, services, mqtt, static)
            running.append(services)
            try:
                yield
            finally:
                running.clear()
                await mqtt.stop()  # stop accepting and close MQTT clients before the services go down

    app = FastAPI(
        title="Flow-Gate",
        version=gateway.__version__,
        description="Multi-protocol messaging gateway on NATS JetStream: HTTP/SSE, WebSocket, MQTT 3.1.1 and queues.",
        lifespan=lifespan,
    )
    errors.install(app)
    static = _StaticRoutes(list(app.router.routes), sdk.routes(), dashboard.routes())
    _document_raw_routes(
        app, {"/api/v1/publish": publish.OPENAPI, "/api/v1/subscribe": sse.OPENAPI, **queue_docs.OPENAPI}
    )
    fast = FastPath(app)  # publish and queue messages without the framework layer (protocols/http/fastpath.py)
    asgi: ASGIApp = ErrorCounter(fast, lambda: running[0].metrics if running else None)  # 4xx/5xx
    if settings.cors_origins:
        asgi = Cors(asgi, settings.cors_origins)  # preflights on every route, headers on every answer
    if settings.trusted_proxies:
        asgi = RealClient(asgi, TrustedProxies(settings.trusted_proxies))  # the client behind a trusted proxy
    return asgi


@dataclass(frozen=True)
class _StaticRoutes:
    """Routes that need no services, built once with the app: FastAPI's own (``/docs``), the SDK, the dashboard."""

    framework: list[BaseRoute]
    sdk: list[Route]
    dashboard: list[BaseRoute]


def _mount(app: FastAPI, fast: FastPath, services: Services, mqtt: MqttServer, static: _StaticRoutes) -> None:
    """Every front end's routes, built by its factory from the services it is handed, in matching order."""
    app.router.routes[:] = static.framework  # a lifespan run again starts from the app as created
    app.openapi_schema = None
    settings = services.settings
    publish_handler = publish.endpoint(services.tokens, services.publisher, settings.max_message_bytes)
    queue_api = queues.QueueApi(services.queues, services.tokens, settings.max_message_bytes)
    fast.serve(publish_handler, queue_api)
    app.add_route("/api/v1/publish", publish_handler, methods=["POST"], include_in_schema=False)
    app.add_route("/api/v1/subscribe", sse.endpoint(services), methods=["GET"], include_in_schema=False)
    app.router.routes.extend(queues.routes(queue_api))  # lean Starlette routes (protocols/http/queues.py)
    app.router.routes.extend(static.sdk)  # /sdk/flowgate.js, the JavaScript client (protocols/http/sdk.py)
    app.router.routes.append(WebSocketRoute("/ws", WsEndpoint(services)))  # a raw ASGI endpoint (protocols/ws)
    app.router.routes.append(WebSocketRoute("/mqtt", mqtt_over_websocket(mqtt.ctx)))  # MQTT over WebSocket
    app.include_router(revoke.router(services.tokens, services.revocations))  # token revocation
    app.include_router(revoke.admin_router(services.secrets, services.accounts, services.revocations))
    app.include_router(token.router(services))
    app.include_router(admin.router(services))
    app.include_router(keys.router(services))
    app.include_router(health.router(services.bus, services.metrics))
    app.include_router(usage.router(services.tokens, services.guard))
    # what the dashboard needs beyond the API above
    app.include_router(history.router(services))
    app.include_router(stats.router(services.secrets, services.bus, services.metrics))
    mqtt_port = mqtt.port if settings.mqtt_port != -1 else None  # None: the MQTT TCP listener is off
    app.include_router(stats.info_router(app.version, mqtt_port))
    # the backend's side (gateway/webhooks, ...)
    app.include_router(webhooks.router(services.tokens, services.webhooks))
    app.include_router(triggers.router(services))
    app.include_router(presence.router(services.tokens, services.events))
    app.router.routes.extend(static.dashboard)  # the web dashboard at / and /dashboard/ (GET only)
    # last: POST /<account>/<queue> takes any two-level POST path no route above matched
    app.router.routes.extend(sqs.routes(services))  # SQS wire protocols: POST / and POST /<account>/<queue>


def _document_raw_routes(app: FastAPI, paths: dict[str, dict[str, Any]]) -> None:
    """Add the lean Starlette routes to the OpenAPI document FastAPI generates."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema["paths"].update(paths)
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
