"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from protocols.http.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """NATS is connected and the streams are ready."""
    ready = services.bus.ready
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "nats": services.bus.connected},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
