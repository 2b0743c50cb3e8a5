"""``/api/v1/webhooks``: a user's outgoing webhooks (JWT), created, listed, changed, paused and deleted.

See ``gateway.webhooks`` for what a webhook does; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import BadRequest
from protocols.http.deps import ClaimsDep, ServicesDep, read_body

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

MAX_BODY = 64 * 1024


async def json_body(request: Request) -> Any:
    raw = await read_body(request, MAX_BODY)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None


@router.post("", status_code=201)
async def create_webhook(request: Request, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """Create a webhook; the answer is the only one that shows its ``secret``."""
    webhook = await services.webhooks.create(claims, await json_body(request))
    return webhook.public(with_secret=True)


@router.get("")
async def list_webhooks(claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return {"webhooks": [w.public() for w in await services.webhooks.list_all(claims)]}


@router.get("/{webhook_id}")
async def get_webhook(webhook_id: str, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return (await services.webhooks.get(claims, webhook_id)).public()


@router.patch("/{webhook_id}")
async def update_webhook(webhook_id: str, request: Request, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """Change ``url``, ``secret``, ``headers``, ``dead_letter_queue``, ``description`` or ``paused``."""
    return (await services.webhooks.update(claims, webhook_id, await json_body(request))).public()


@router.post("/{webhook_id}/pause")
async def pause_webhook(webhook_id: str, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """Stop delivering; messages published meanwhile wait (up to the stream's retention)."""
    return (await services.webhooks.update(claims, webhook_id, {"paused": True})).public()


@router.post("/{webhook_id}/resume")
async def resume_webhook(webhook_id: str, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return (await services.webhooks.update(claims, webhook_id, {"paused": False})).public()


@router.get("/{webhook_id}/deliveries")
async def webhook_deliveries(webhook_id: str, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """The most recent delivery attempts (status, latency, error), newest first."""
    return {"deliveries": await services.webhooks.deliveries(claims, webhook_id)}


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, claims: ClaimsDep, services: ServicesDep) -> Response:
    await services.webhooks.delete(claims, webhook_id)
    return Response(status_code=204)
