"""``POST /api/v1/publish``: the hot path, a lean endpoint with orjson.

FastAPI's per-request model handling costs about four times a raw handler (see
PERFORMANCE.md), so this route skips it, and ``protocols.http.fastpath`` calls it
without the framework's middleware; its schema is still in ``/docs``.
"""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from auth.tokens import TokenService
from gateway.errors import BadRequest
from gateway.message_meta import PROPS_HEADER, meta_from_request
from gateway.payload import Payload
from gateway.publishing import Publisher
from protocols.http.deps import Handler, claims_of, header, read_body

JSON_OVERHEAD = 64 * 1024  # room for the envelope and JSON escaping around a maximal message

OPENAPI = {
    "post": {
        "tags": ["messages"],
        "summary": "Publish a message",
        "description": "Stored in JetStream before the answer. `Idempotency-Key` deduplicates retries.",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"example": {"topic": "notifications", "message": "Hello World!"}}},
        },
        "responses": {
            "200": {
                "description": "Stored",
                "content": {
                    "application/json": {
                        "example": {"topic": "alice_myapp_notifications", "seq": 42, "duplicate": False}
                    }
                },
            }
        },
        "security": [{"bearer": []}],
    }
}


def endpoint(tokens: TokenService, publisher: Publisher, max_message_bytes: int) -> Handler:
    """The publish handler, for the fast path and the FastAPI app's route alike."""
    limit = max_message_bytes * 6 + JSON_OVERHEAD  # a JSON string may escape each byte

    async def publish(request: Request) -> Response:
        claims = claims_of(tokens, request)
        body = await read_body(request, limit)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest('body must be JSON: {"topic": ..., "message": ...}') from None
        if not isinstance(document, dict) or not isinstance(document.get("topic"), str) or "message" not in document:
            raise BadRequest('body must be {"topic": <string>, "message": <string or JSON>}')
        payload = Payload.from_value(document["message"])
        headers = None
        if "properties" in document:  # MQTT 5 message properties (gateway/message_meta.py)
            payload.meta = meta_from_request(document["properties"], time.time())
            headers = {PROPS_HEADER: payload.meta.to_header()}
        published = await publisher.publish(
            claims,
            document["topic"],
            payload,
            protocol="http",
            idempotency_key=header(request, b"idempotency-key"),
            headers=headers,
        )
        answer = {"topic": published.full_name, "seq": published.seq, "duplicate": published.duplicate}
        return Response(orjson.dumps(answer), media_type="application/json")

    return publish
