"""Admin views for the dashboard: ``GET /api/v1/admin/stats`` (the live server view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from gateway.stats import ServerStats
from protocols.http.deps import AdminDep, ServicesDep

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[AdminDep])

_EXAMPLE = {
    "ready": True,
    "nats": True,
    "connections": {"ws": 3, "sse": 1, "mqtt": 12},
    "connections_total": 16,
    "published": {"http": 1200, "ws": 40, "mqtt": 9000},
    "delivered": {"ws": 2400, "sse": 1200, "mqtt": 18000},
    "rejected": {"rate_limited": 2},
    "slow_consumers": {"ws": 0},
    "totals": {
        "published": 10240,
        "delivered": 21600,
        "rejected": 2,
        "slow_consumers": 0,
        "http_4xx": 7,
        "http_5xx": 0,
    },
    "per_second": {
        "published": 12.5,
        "delivered": 25.0,
        "rejected": 0,
        "slow_consumers": 0,
        "http_4xx": 0,
        "http_5xx": 0,
    },
}


def _stats(request: Request) -> ServerStats:
    """This app's sampler (it remembers the previous reading to compute rates)."""
    stats: ServerStats | None = getattr(request.app.state, "server_stats", None)
    if stats is None:
        stats = request.app.state.server_stats = ServerStats(request.app.state.services.metrics)
    return stats


@router.get("/stats", responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}})
async def stats(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Readiness, NATS, connections per protocol, messages in and out, slow consumers and HTTP errors.

    Counts are this process's since it started (what ``/metrics`` shows);
    ``per_second`` is the rate since the previous call to this endpoint.
    """
    return {"ready": services.bus.ready, "nats": services.bus.connected, **_stats(request).read()}


info_router = APIRouter(tags=["health"])


@info_router.get("/api/v1/info")
async def info(request: Request) -> dict[str, Any]:
    """What clients need to connect besides the HTTP address: the version and the MQTT TCP port."""
    mqtt = getattr(request.app.state, "mqtt", None)
    return {"version": request.app.version, "mqtt_port": mqtt.port if mqtt is not None else None}
