"""Admin views for the dashboard: ``GET /api/v1/admin/stats`` (the live server view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from auth.secrets import ServerSecrets
from gateway.bus import Bus
from gateway.metrics import Metrics
from gateway.stats import ServerStats
from protocols.http.deps import admin_key

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


def router(secrets: ServerSecrets, bus: Bus, metrics: Metrics) -> APIRouter:
    """``GET /api/v1/admin/stats``, behind the admin key, with this process's sampler."""
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_key(secrets))])
    sampler = ServerStats(metrics)  # it remembers the previous reading to compute rates

    @api.get("/stats", responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}})
    async def stats() -> dict[str, Any]:
        """Readiness, NATS, connections per protocol, messages in and out, slow consumers and HTTP errors.

        Counts are this process's since it started (what ``/metrics`` shows);
        ``per_second`` is the rate since the previous call to this endpoint.
        """
        return {"ready": bus.ready, "nats": bus.connected, **sampler.read()}

    return api


def info_router(version: str, mqtt_port: int | None) -> APIRouter:
    """``GET /api/v1/info``: what clients need to connect besides the HTTP address."""
    api = APIRouter(tags=["health"])

    @api.get("/api/v1/info")
    async def info() -> dict[str, Any]:
        """What clients need to connect besides the HTTP address: the version and the MQTT TCP port."""
        return {"version": version, "mqtt_port": mqtt_port}

    return api
