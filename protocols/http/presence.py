"""``GET /api/v1/presence?topic=room/1`` (JWT): who is subscribed to a topic now, on every replica."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from auth.tokens import Claims, TokenService
from gateway.errors import BadRequest, Forbidden
from gateway.events import ConnectionEvents
from protocols.http.deps import token_claims


def router(tokens: TokenService, events: ConnectionEvents) -> APIRouter:
    """Presence, from the connection events of every replica."""
    api = APIRouter(prefix="/api/v1", tags=["presence"])
    verified = Depends(token_claims(tokens))

    @api.get("/presence")
    async def presence(request: Request, claims: Claims = verified) -> dict[str, Any]:
        """The connections subscribed to a filter matching ``topic``: client id, protocol, connected since, info."""
        name = request.query_params.get("topic")
        if not name:
            raise BadRequest("give a topic parameter")
        topic = claims.namespace.topic(name)
        if not claims.permissions.subscribe.permits_topic(topic):
            raise Forbidden(f"this token may not subscribe to {topic!r}")
        return {"topic": topic, "clients": await events.subscribed_to(claims.namespace, topic)}

    return api
