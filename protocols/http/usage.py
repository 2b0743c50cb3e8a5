"""``GET /api/v1/usage``: the caller's billing period, usage, quota, balance and rate limit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from auth.tokens import Claims, TokenService
from gateway.billing import BillingGuard
from protocols.http.deps import token_claims

_EXAMPLE = {
    "user_id": "alice",
    "app": "myapp",
    "plan": "free",
    "period": {"id": "2026-11", "start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    "used": 1200,
    "quota": 6000000,
    "remaining": 5998800,
    "balance": 0,
    "resets_at": "2026-12-01T00:00:00Z",
    "app_usage": {"publish": 400, "queue_send": 0, "delivery": 800, "units": 1200},
    "rate_limit": {"rate": 500, "burst": 1000, "remaining": 1000, "reset": 0},
    "limits": {"max_connections": 200, "max_message_bytes": 262144},
    "connections": 2,
    "prices": {"publish": 1, "queue_send": 1, "delivery": 1},
}


def router(tokens: TokenService, guard: BillingGuard) -> APIRouter:
    """The caller's usage, as the billing guard counts it."""
    api = APIRouter(prefix="/api/v1", tags=["billing"])
    verified = Depends(token_claims(tokens))

    @api.get("/usage", responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}})
    async def usage(claims: Claims = verified) -> dict[str, Any]:
        """Usage of the token's user in the current period (all apps; ``app_usage`` is the token's app).

        ``used`` counts units: one per message published or queue message sent, one
        per message delivered to a subscriber. Counts from other replicas arrive
        within one sync interval.
        """
        return await guard.usage(claims.user_id, claims.app)

    return api
