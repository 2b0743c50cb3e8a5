"""``/api/v1/triggers`` (JWT) and ``POST /hooks/<id>``, the URL third-party services call.

See ``gateway.triggers``; this module only maps HTTP to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from protocols.http.deps import ClaimsDep, ServicesDep, header, read_body, services_of
from protocols.http.webhooks import json_body

router = APIRouter(tags=["triggers"])


@router.post("/api/v1/triggers", status_code=201)
async def create_trigger(request: Request, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    """Create a trigger; the answer holds its ``url`` and (the only time) its ``secret``."""
    trigger = await services.triggers.create(claims, await json_body(request))
    return {**trigger.public(with_secret=True), "url": str(request.base_url).rstrip("/") + f"/hooks/{trigger.id}"}


@router.get("/api/v1/triggers")
async def list_triggers(claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return {"triggers": [t.public() for t in await services.triggers.list_all(claims)]}


@router.get("/api/v1/triggers/{trigger_id}")
async def get_trigger(trigger_id: str, claims: ClaimsDep, services: ServicesDep) -> dict[str, Any]:
    return (await services.triggers.get(claims, trigger_id)).public()


@router.delete("/api/v1/triggers/{trigger_id}", status_code=204)
async def delete_trigger(trigger_id: str, claims: ClaimsDep, services: ServicesDep) -> Response:
    await services.triggers.delete(claims, trigger_id)
    return Response(status_code=204)


@router.post("/hooks/{trigger_id}")
async def receive(trigger_id: str, request: Request) -> dict[str, Any]:
    """Verify the signature (401 if wrong) and publish the body; 200 once JetStream stored it."""
    services = services_of(request)
    body = await read_body(request, services.settings.max_message_bytes)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    published = await services.triggers.receive(trigger_id, headers, header(request, b"content-type"), body)
    return {"topic": published.topic, "seq": published.seq, "duplicate": published.duplicate}
