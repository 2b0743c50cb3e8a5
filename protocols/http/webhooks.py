"""``/api/v1/webhooks``: a user's outgoing webhooks (JWT), created, listed, changed, paused and deleted.

See ``gateway.webhooks`` for what a webhook does; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from auth.tokens import Claims, TokenService
from gateway.errors import BadRequest
from gateway.webhooks import Webhooks
from protocols.http.deps import read_body, token_claims

MAX_BODY = 64 * 1024


async def json_body(request: Request) -> Any:
    raw = await read_body(request, MAX_BODY)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None


def router(tokens: TokenService, webhooks: Webhooks) -> APIRouter:
    """The webhook routes of the token's user."""
    api = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
    verified = Depends(token_claims(tokens))

    @api.post("", status_code=201)
    async def create_webhook(request: Request, claims: Claims = verified) -> dict[str, Any]:
        """Create a webhook; the answer is the only one that shows its ``secret``."""
        webhook = await webhooks.create(claims, await json_body(request))
        return webhook.public(with_secret=True)

    @api.get("")
    async def list_webhooks(claims: Claims = verified) -> dict[str, Any]:
        return {"webhooks": [w.public() for w in await webhooks.list_all(claims)]}

    @api.get("/{webhook_id}")
    async def get_webhook(webhook_id: str, claims: Claims = verified) -> dict[str, Any]:
        return (await webhooks.get(claims, webhook_id)).public()

    @api.patch("/{webhook_id}")
    async def update_webhook(webhook_id: str, request: Request, claims: Claims = verified) -> dict[str, Any]:
        """Change ``url``, ``secret``, ``headers``, ``dead_letter_queue``, ``description`` or ``paused``."""
        return (await webhooks.update(claims, webhook_id, await json_body(request))).public()

    @api.post("/{webhook_id}/pause")
    async def pause_webhook(webhook_id: str, claims: Claims = verified) -> dict[str, Any]:
        """Stop delivering; messages published meanwhile wait (up to the stream's retention)."""
        return (await webhooks.update(claims, webhook_id, {"paused": True})).public()

    @api.post("/{webhook_id}/resume")
    async def resume_webhook(webhook_id: str, claims: Claims = verified) -> dict[str, Any]:
        return (await webhooks.update(claims, webhook_id, {"paused": False})).public()

    @api.get("/{webhook_id}/deliveries")
    async def webhook_deliveries(webhook_id: str, claims: Claims = verified) -> dict[str, Any]:
        """The most recent delivery attempts (status, latency, error), newest first."""
        return {"deliveries": await webhooks.deliveries(claims, webhook_id)}

    @api.delete("/{webhook_id}", status_code=204)
    async def delete_webhook(webhook_id: str, claims: Claims = verified) -> Response:
        await webhooks.delete(claims, webhook_id)
        return Response(status_code=204)

    return api
