"""``/api/v1/triggers`` (JWT) and ``POST /hooks/<id>``, the URL third-party services call.

See ``gateway.triggers``; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from auth.tokens import Claims
from protocols.http.deps import header, read_body, token_claims
from protocols.http.webhooks import json_body
from protocols.services import Services


def router(services: Services) -> APIRouter:
    """The trigger routes of the token's user and the public hook URL."""
    api = APIRouter(tags=["triggers"])
    verified = Depends(token_claims(services.tokens))

    @api.post("/api/v1/triggers", status_code=201)
    async def create_trigger(request: Request, claims: Claims = verified) -> dict[str, Any]:
        """Create a trigger; the answer holds its ``url`` and (the only time) its ``secret``."""
        trigger = await services.triggers.create(claims, await json_body(request))
        return {**trigger.public(with_secret=True), "url": str(request.base_url).rstrip("/") + f"/hooks/{trigger.id}"}

    @api.get("/api/v1/triggers")
    async def list_triggers(claims: Claims = verified) -> dict[str, Any]:
        return {"triggers": [t.public() for t in await services.triggers.list_all(claims)]}

    @api.get("/api/v1/triggers/{trigger_id}")
    async def get_trigger(trigger_id: str, claims: Claims = verified) -> dict[str, Any]:
        return (await services.triggers.get(claims, trigger_id)).public()

    @api.delete("/api/v1/triggers/{trigger_id}", status_code=204)
    async def delete_trigger(trigger_id: str, claims: Claims = verified) -> Response:
        await services.triggers.delete(claims, trigger_id)
        return Response(status_code=204)

    @api.post("/hooks/{trigger_id}")
    async def receive(trigger_id: str, request: Request) -> dict[str, Any]:
        """Verify the signature (401 if wrong) and publish the body; 200 once JetStream stored it."""
        body = await read_body(request, services.settings.max_message_bytes)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        published = await services.triggers.receive(trigger_id, headers, header(request, b"content-type"), body)
        return {"topic": published.topic, "seq": published.seq, "duplicate": published.duplicate}

    return api
