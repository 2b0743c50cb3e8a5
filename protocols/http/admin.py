"""Admin API: users and their API keys (``Authorization: Bearer <admin key>``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from auth.accounts import User
from gateway.billing.plans import validate_overrides
from protocols.http.deps import admin_key
from protocols.services import Services

PLAN_PATTERN = r"^[a-z0-9-]{1,32}$"


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    plan: str = Field(default="free", pattern=PLAN_PATTERN)


class UserChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str | None = Field(default=None, pattern=PLAN_PATTERN)
    disabled: bool | None = None
    limits: dict[str, int | float | None] | None = Field(
        default=None,
        description="Overrides of the plan's quota, rate, burst, max_connections, max_message_bytes; null removes one.",
    )


class Credits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0, le=10**12, description="Credits to add to the prepaid balance.")


class KeyRateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(gt=0, le=10**7, description="Publishes per second with tokens of this key.")
    burst: int = Field(default=1, ge=1, le=10**8, description="Publishes allowed at once.")


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    rate_limit: KeyRateLimit | None = Field(
        default=None, description="The key's own publish rate limit, applied on top of the plan's (per-user) one."
    )

    def limit(self) -> dict[str, Any]:
        return {} if self.rate_limit is None else self.rate_limit.model_dump()


def user_view(user: User) -> dict[str, Any]:
    return user.to_json()


def router(services: Services) -> APIRouter:
    """The admin routes, each behind the admin key."""
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_key(services.secrets))])

    @api.post("/users", status_code=201)
    async def create_user(body: NewUser) -> dict[str, Any]:
        services.guard.catalog.check_name(body.plan)
        return user_view(await services.accounts.create_user(body.user_id, body.plan))

    @api.get("/users")
    async def list_users() -> dict[str, Any]:
        return {"users": [user_view(u) for u in await services.accounts.list_users()]}

    @api.get("/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, Any]:
        return user_view(await services.accounts.get_user(user_id))

    @api.patch("/users/{user_id}")
    async def update_user(user_id: str, body: UserChanges) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True, exclude={"limits"})
        if "plan" in changes:
            services.guard.catalog.check_name(changes["plan"])
        if body.limits is not None:
            user = await services.accounts.get_user(user_id)
            overrides = dict(user.extra.get("limits") or {})
            for name, value in body.limits.items():
                if value is None:
                    overrides.pop(name, None)
                else:
                    overrides[name] = value
            changes["extra"] = {**user.extra, "limits": validate_overrides(overrides)}
        user = await services.accounts.update_user(user_id, changes)
        services.revocations.user_changed(user)  # disabling ends the user's connections here now, elsewhere at once
        await services.guard.changed(user_id)
        return user_view(user)

    @api.get("/users/{user_id}/usage")
    async def get_usage(user_id: str) -> dict[str, Any]:
        """A user's usage this period, as ``GET /api/v1/usage`` shows it to the user (``apps`` has the per-app counts)."""
        await services.accounts.get_user(user_id)
        return await services.guard.usage(user_id)

    @api.get("/plans")
    async def list_plans() -> dict[str, Any]:
        """The configured plans (built in, or ``FLOWGATE_PLANS_FILE``) and the prices per operation."""
        catalog = services.guard.catalog
        return {
            "plans": [plan.to_json() for plan in catalog.plans.values()],
            "prices": dataclasses.asdict(catalog.prices),
        }

    @api.post("/users/{user_id}/credits")
    async def add_credits(user_id: str, body: Credits) -> dict[str, Any]:
        """Top up the prepaid balance; service resumes at once on every replica."""
        state = await services.guard.top_up(user_id, body.amount)
        return {"user_id": user_id, "balance": state.credits, "period": state.period, "used": state.used}

    @api.delete("/users/{user_id}", status_code=204)
    async def delete_user(user_id: str) -> Response:
        await services.accounts.delete_user(user_id)
        await services.revocations.user_deleted(user_id)
        return Response(status_code=204)

    @api.post("/users/{user_id}/keys", status_code=201)
    async def create_key(user_id: str, body: NewKey) -> dict[str, Any]:
        record, value = await services.accounts.create_key(user_id, body.name, **body.limit())
        return {**record.public(), "key": value, **services.accounts.aws_pair(record)}

    @api.get("/users/{user_id}/keys")
    async def list_keys(user_id: str) -> dict[str, Any]:
        await services.accounts.get_user(user_id)
        return {"keys": [k.public() for k in await services.accounts.list_keys(user_id)]}

    @api.delete("/users/{user_id}/keys/{key_id}", status_code=204)
    async def delete_key(user_id: str, key_id: str) -> Response:
        await services.accounts.delete_key(user_id, key_id)
        await services.revocations.revoke_key(user_id, key_id)  # the tokens issued from it end too
        return Response(status_code=204)

    return api
