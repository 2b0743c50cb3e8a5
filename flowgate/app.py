"""Assembly of the ASGI application: services in the lifespan, routes of every front-end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import WebSocketRoute
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
    queues,
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
from protocols.http.revoke import admin_router as revoke_admin_router
from protocols.http.revoke import router as revoke_router
from protocols.http.status_metrics import ErrorCounter
from protocols.mqtt.server import MqttServer
from protocols.mqtt.websocket import mqtt_over_websocket
from protocols.sqs import endpoint as sqs
from protocols.ws.endpoint import WsEndpoint


def create_app(settings: Settings, draining: Draining | None = None) -> ASGIApp:
    """The ASGI app: the FastAPI app with every route, behind the dispatcher for the hot ones
    (and, when configured, CORS and the real client address around both).

    ``draining`` is how the server tells long-lived streams that shutdown has begun.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(settings, draining) as services:
            app.state.services = services
            mqtt = await MqttServer.open(services)
            await mqtt.start()
            services.draining.on_drain(mqtt.drain)  # one shutdown with HTTP (gateway/draining.py)
            app.state.mqtt = mqtt
            try:
                yield
            finally:
                await mqtt.stop()  # stop accepting and close MQTT clients before the services go down

    app = FastAPI(
        title="Flow-Gate",
        version=gateway.__version__,
        description="Multi-protocol messaging gateway on NATS JetStream: HTTP/SSE, WebSocket, MQTT 3.1.1 and queues.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.add_route("/api/v1/publish", publish.publish, methods=["POST"], include_in_schema=False)
    app.add_route("/api/v1/subscribe", sse.subscribe, methods=["GET"], include_in_schema=False)
    app.router.routes.extend(queues.ROUTES)  # lean Starlette routes (protocols/http/queues.py)
    app.router.routes.extend(sdk.routes())  # /sdk/flowgate.js, the JavaScript client (protocols/http/sdk.py)
    app.router.routes.append(WebSocketRoute("/ws", WsEndpoint()))  # a raw ASGI endpoint (protocols/ws)
    app.router.routes.append(WebSocketRoute("/mqtt", mqtt_over_websocket))  # MQTT over WebSocket (protocols/mqtt)
    app.include_router(revoke_router)  # token revocation (protocols/http/revoke.py)
    app.include_router(revoke_admin_router)
    for router in (token.router, admin.router, keys.router, health.router, usage.router):
        app.include_router(router)
    for router in (history.router, stats.router, stats.info_router):  # what the dashboard needs beyond the API above
        app.include_router(router)
    for router in (webhooks.router, triggers.router, presence.router):  # the backend's side (gateway/webhooks, ...)
        app.include_router(router)
    app.router.routes.extend(dashboard.routes())  # the web dashboard at / and /dashboard/ (GET only)
    # last: POST /<account>/<queue> takes any two-level POST path no route above matched
    app.router.routes.extend(sqs.ROUTES)  # SQS wire protocols: POST / and POST /<account>/<queue> (protocols/sqs)
    _document_raw_routes(app, {"/api/v1/publish": publish.OPENAPI, "/api/v1/subscribe": sse.OPENAPI, **queues.OPENAPI})
    asgi: ASGIApp = FastPath(app)  # publish and queue messages without the framework layer (protocols/http/fastpath.py)
    asgi = ErrorCounter(asgi, lambda: getattr(getattr(app.state, "services", None), "metrics", None))  # 4xx/5xx
    if settings.cors_origins:
        asgi = Cors(asgi, settings.cors_origins)  # preflights on every route, headers on every answer
    if settings.trusted_proxies:
        asgi = RealClient(asgi, TrustedProxies(settings.trusted_proxies))  # the client behind a trusted proxy
    return asgi


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
