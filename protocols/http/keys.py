"""Self-service API keys: a user manages their own keys with a JWT."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from protocols.http.admin import NewKey
from protocols.http.deps import ClaimsDep, ServicesDep

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


@router.post("", status_code=201)
async def create_key(body: NewKey, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    record, value = await services.accounts.create_key(claims.user_id, body.name, **body.limit())
    return {**record.public(), "key": value, **services.accounts.aws_pair(record)}


@router.get("")
async def list_keys(claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return {"keys": [k.public() for k in await services.accounts.list_keys(claims.user_id)]}


@router.delete("/{key_id}", status_code=204)
async def delete_key(key_id: str, claims: ClaimsDep, services: ServicesDep) -> Response:
    await services.accounts.delete_key(claims.user_id, key_id)
    await services.revocations.revoke_key(claims.user_id, key_id)  # the tokens issued from it end too
    return Response(status_code=204)
