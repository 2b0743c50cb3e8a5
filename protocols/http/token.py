"""``POST /token``: exchange a static API key for a short-lived JWT.

The key comes in ``Authorization: Bearer <key>``, ``X-API-Key`` or the body's
``api_key``; the body may name the ``app``, a ``ttl`` and narrower ``permissions``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request

from auth.accounts import KEY_PREFIX
from auth.permissions import Permissions
from auth.revocations import key_revoked
from auth.tokens import bearer
from gateway.errors import BadRequest, Unauthorized
from gateway.topics import Namespace, validate_ident
from protocols.services import Services

DEFAULT_APP = "default"

_EXAMPLE = {"app": "myapp", "ttl": 900, "permissions": {"subscribe": {"allow": ["sensors/#"]}}}


_BODY_DOC = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}, "example": _EXAMPLE}}}}


def router(services: Services) -> APIRouter:
    """``POST /token``: a token for an API key, checked by the accounts and issued by the token service."""
    api = APIRouter(tags=["auth"])

    @api.post("/token", openapi_extra=_BODY_DOC)
    @api.post("/token/", include_in_schema=False)
    async def issue_token(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise BadRequest("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        api_key = (
            bearer(request.headers.get("authorization")) or request.headers.get("x-api-key") or body.get("api_key")
        )
        if not isinstance(api_key, str) or not api_key:
            raise Unauthorized("missing API key: send Authorization: Bearer <API key>, X-API-Key or api_key")
        services.guard.check_token_request(request.client.host if request.client else "unknown", api_key)
        app = body.get("app", DEFAULT_APP)
        ttl = body.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
            raise BadRequest("ttl must be an integer number of seconds")
        validate_ident(app, "app")
        permissions = Permissions.from_json(body.get("permissions"))
        try:
            user, key = await services.accounts.authenticate(api_key)
        except Unauthorized:
            if services.tokens.revocations.is_key_revoked(api_key[len(KEY_PREFIX) : len(KEY_PREFIX) + 16]):
                raise key_revoked() from None  # say why: the key was deleted
            raise
        namespace = Namespace(user.user_id, app)
        key_limit = None if key.rate is None else (key.rate, key.burst or 1)  # enforced by the billing guard
        token, claims = services.tokens.issue(
            namespace, ttl=ttl, permissions=permissions, key_id=key.id, key_limit=key_limit
        )
        return {
            "token": token,
            "token_type": "Bearer",
            "expires_in": claims.expires_at - claims.issued_at,
            "expires_at": claims.expires_at,
            "user_id": user.user_id,
            "app": app,
            "topic_prefix": namespace.prefix,
        }

    return api
