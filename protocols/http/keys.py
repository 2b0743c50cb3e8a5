"""Self-service API keys: a user manages their own keys with a JWT."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from auth.tokens import Claims
from protocols.http.admin import NewKey
from protocols.http.deps import token_claims
from protocols.services import Services


def router(services: Services) -> APIRouter:
    """A user's own API keys."""
    api = APIRouter(prefix="/api/v1/keys", tags=["keys"])
    verified = Depends(token_claims(services.tokens))

    @api.post("", status_code=201)
    async def create_key(body: NewKey, claims: Claims = verified) -> dict[str, Any]:
        record, value = await services.accounts.create_key(claims.user_id, body.name, **body.limit())
        return {**record.public(), "key": value, **services.accounts.aws_pair(record)}

    @api.get("")
    async def list_keys(claims: Claims = verified) -> dict[str, Any]:
        return {"keys": [k.public() for k in await services.accounts.list_keys(claims.user_id)]}

    @api.delete("/{key_id}", status_code=204)
    async def delete_key(key_id: str, claims: Claims = verified) -> Response:
        await services.accounts.delete_key(claims.user_id, key_id)
        await services.revocations.revoke_key(claims.user_id, key_id)  # the tokens issued from it end too
        return Response(status_code=204)

    return api
