"""Usage over time: ``GET /api/v1/usage/history`` (JWT) and its admin twin for any user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from auth.tokens import Claims
from protocols.http.deps import admin_key, token_claims
from protocols.services import Services

_EXAMPLE = {
    "user_id": "alice",
    "period": {"id": "2026-12", "start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
    "hourly": [{"start": "2026-12-05T04:00:00Z", "units": 0}, {"start": "2026-12-05T05:00:00Z", "units": 120}],
    "daily": [{"date": "2026-12-01", "units": 5400}, {"date": "2026-12-02", "units": 120}],
}
_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {"example": _EXAMPLE}}}}


def router(services: Services) -> APIRouter:
    """A user's usage history, for the user (JWT) and for the admin."""
    api = APIRouter(tags=["billing"])
    verified = Depends(token_claims(services.tokens))
    admin_only = Depends(admin_key(services.secrets))

    @api.get("/api/v1/usage/history", responses=_DOC)
    async def usage_history(claims: Claims = verified) -> dict[str, Any]:
        """Units used by the token's user (all apps): per hour for the last 48 hours and per day this period.

        Oldest first; hours and days in UTC. Counts arrive within one billing sync
        interval, from every replica.
        """
        return await services.guard.usage_history(claims.user_id)

    @api.get("/api/v1/admin/users/{user_id}/usage/history", tags=["admin"], responses=_DOC, dependencies=[admin_only])
    async def admin_usage_history(user_id: str) -> dict[str, Any]:
        """A user's usage over time, as ``GET /api/v1/usage/history`` shows it to the user."""
        await services.accounts.get_user(user_id)
        return await services.guard.usage_history(user_id)

    return api
