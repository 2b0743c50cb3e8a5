"""Token revocation: a user revokes its own tokens, an admin any user's (``auth.revocations``).

- ``POST /api/v1/tokens/revoke`` (JWT): no body or ``{}`` revokes the token
  sent, ``{"jti": "..."}`` another token of the same user, ``{"all": true}``
  every token of the user issued until now.
- ``POST /api/v1/admin/users/{id}/revoke-tokens`` (admin key): every token of
  the user issued until now, or with ``{"jti": "..."}`` that one.

Takes effect on every replica within a second: requests with those tokens get
401 and live connections holding them are closed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request

from auth.accounts import Accounts
from auth.revocation_feed import RevocationFeed
from auth.secrets import ServerSecrets
from auth.tokens import Claims, TokenService
from gateway.errors import BadRequest
from protocols.http.deps import admin_key, token_claims

_JTI = re.compile(r"[0-9a-f]{1,64}")
MAX_OWN_REVOCATIONS = 1000  # single tokens a user may have revoked at once (memory on every replica)
_BODY_DOC = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}, "example": {"jti": "5f0c2e...", "all": False}}},
    }
}


async def _body(request: Request) -> tuple[str | None, bool]:
    """The ``jti`` and ``all`` of an optional JSON body."""
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(body, dict) or set(body) - {"jti", "all"}:
        raise BadRequest('body must be a JSON object with "jti" or "all"')
    jti, everything = body.get("jti"), body.get("all", False)
    if jti is not None and (not isinstance(jti, str) or not _JTI.fullmatch(jti)):
        raise BadRequest("jti must be a token's jti claim")
    if not isinstance(everything, bool) or (everything and jti is not None):
        raise BadRequest('give either "jti" or "all": true')
    return jti, everything


def router(tokens: TokenService, revocations: RevocationFeed) -> APIRouter:
    """``POST /api/v1/tokens/revoke``: a user revokes its own tokens."""
    api = APIRouter(prefix="/api/v1/tokens", tags=["auth"])
    verified = Depends(token_claims(tokens))

    @api.post("/revoke", openapi_extra=_BODY_DOC)
    async def revoke_own(request: Request, claims: Claims = verified) -> dict[str, Any]:
        """Revoke the token sent, another of the same user's tokens (``jti``), or all of them (``all``)."""
        jti, everything = await _body(request)
        if everything:
            not_before_ms = await revocations.revoke_user_tokens(claims.user_id)
            return {"revoked": "all", "user_id": claims.user_id, "issued_until_ms": not_before_ms}
        if jti is None or jti == claims.jti:
            await revocations.revoke_token(claims.user_id, claims.jti, claims.expires_at)
            return {"revoked": "token", "user_id": claims.user_id, "jti": claims.jti}
        if revocations.state.revoked_tokens(claims.user_id) >= MAX_OWN_REVOCATIONS:
            raise BadRequest(
                f'{MAX_OWN_REVOCATIONS} tokens are revoked one by one already: revoke them all with {{"all": true}}'
            )
        await revocations.revoke_token(claims.user_id, jti)
        return {"revoked": "token", "user_id": claims.user_id, "jti": jti}

    return api


def admin_router(secrets: ServerSecrets, accounts: Accounts, revocations: RevocationFeed) -> APIRouter:
    """``POST /api/v1/admin/users/{id}/revoke-tokens``: the admin revokes any user's tokens."""
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_key(secrets))])

    @api.post("/users/{user_id}/revoke-tokens", openapi_extra=_BODY_DOC)
    async def revoke_user_tokens(user_id: str, request: Request) -> dict[str, Any]:
        """Revoke every token of the user issued until now, or one (``jti``)."""
        jti, _ = await _body(request)
        await accounts.get_user(user_id)  # 404 for an unknown user
        if jti is not None:
            await revocations.revoke_token(user_id, jti)
            return {"revoked": "token", "user_id": user_id, "jti": jti}
        not_before_ms = await revocations.revoke_user_tokens(user_id)
        return {"revoked": "all", "user_id": user_id, "issued_until_ms": not_before_ms}

    return api
