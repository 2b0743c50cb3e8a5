"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from gateway.bus import Bus
from gateway.metrics import Metrics


def router(bus: Bus, metrics: Metrics) -> APIRouter:
    """The probes and the Prometheus metrics of this process."""
    api = APIRouter(tags=["health"])

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        """NATS is connected and the streams are ready."""
        ready = bus.ready
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "nats": bus.connected},
            status_code=200 if ready else 503,
        )

    @api.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api
