"""``GET /api/v1/presence?topic=room/1`` (JWT): who is subscribed to a topic now, on every replica."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.errors import BadRequest, Forbidden
from protocols.http.deps import ClaimsDep, ServicesDep

router = APIRouter(prefix="/api/v1", tags=["presence"])


@router.get("/presence")
async def presence(request: Request, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """The connections subscribed to a filter matching ``topic``: client id, protocol, connected since, info."""
    name = request.query_params.get("topic")
    if not name:
        raise BadRequest("give a topic parameter")
    topic = claims.namespace.topic(name)
    if not claims.permissions.subscribe.permits_topic(topic):
        raise Forbidden(f"this token may not subscribe to {topic!r}")
    return {"topic": topic, "clients": await services.events.subscribed_to(claims.namespace, topic)}
