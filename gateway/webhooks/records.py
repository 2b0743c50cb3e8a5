"""Webhook definitions: what a user asked for, validated, and how it is stored in KV.

The bucket ``FG_WEBHOOKS`` holds one JSON record per webhook, keyed by its id;
every replica reads it to know which webhooks to deliver for.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.topics import Namespace, validate_topic
from gateway.webhooks.signing import new_secret, secret_key
from gateway.webhooks.targets import parse_url

BUCKET = "FG_WEBHOOKS"
MAX_HEADERS = 20
_RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host"}
)
_FIELDS = {
    "url",
    "filter",
    "secret",
    "headers",
    "dead_letter_queue",
    "max_age_seconds",
    "paused",
    "description",
    "batch",
}
MAX_BATCH = 100
MAX_BATCH_WAIT_MS = 1_000  # within the consumer's AckWait margin (gateway.webhooks.service)


@dataclass(frozen=True, slots=True)
class Batch:
    """Several messages per request: up to ``max_messages``, waiting up to ``max_wait_ms`` for more."""

    max_messages: int
    max_wait_ms: int = 0

    @classmethod
    def parse(cls, value: Any) -> Batch | None:
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) - {"max_messages", "max_wait_ms"}:
            raise BadRequest('batch must be {"max_messages": N, "max_wait_ms": M}')
        size, wait = value.get("max_messages"), value.get("max_wait_ms", 0)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH:
            raise BadRequest(f"batch.max_messages must be an integer from 1 to {MAX_BATCH}")
        if not isinstance(wait, int) or isinstance(wait, bool) or not 0 <= wait <= MAX_BATCH_WAIT_MS:
            raise BadRequest(f"batch.max_wait_ms must be an integer from 0 to {MAX_BATCH_WAIT_MS}")
        return cls(size, wait)


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    user_id: str
    app: str
    url: str
    filter: str
    secret: str
    headers: dict[str, str] = field(default_factory=dict)
    dead_letter_queue: str = ""
    max_age_seconds: float | None = None  # None: FLOWGATE_WEBHOOK_MAX_AGE
    batch: Batch | None = None  # fixed at creation (the consumer's MaxAckPending)
    paused: bool = False
    description: str = ""
    created_at: int = 0

    @property
    def namespace(self) -> Namespace:
        return Namespace(self.user_id, self.app)

    @property
    def consumer(self) -> str:
        """The durable JetStream consumer that carries this webhook's messages."""
        return f"fgwh_{self.id}"

    @property
    def key(self) -> bytes:
        return secret_key(self.secret)

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        body = asdict(self)
        del body["user_id"]
        if not with_secret:
            del body["secret"]
        return body

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> Webhook:
        fields = orjson.loads(raw)
        fields["batch"] = Batch.parse(fields.get("batch"))
        return cls(**fields)

    @classmethod
    def new(cls, namespace: Namespace, document: Any) -> Webhook:
        """A webhook from a ``POST /api/v1/webhooks`` body (the filter is checked by the caller)."""
        if not isinstance(document, dict) or "url" not in document or "filter" not in document:
            raise BadRequest("body must be a JSON object with 'url' and 'filter'")
        webhook_id = "wh_" + secrets.token_hex(10)
        base = cls(
            webhook_id,
            namespace.user_id,
            namespace.app,
            url="",
            filter="",
            secret="",
            dead_letter_queue=f"webhooks-{webhook_id}-dlq",
            created_at=int(time.time()),
        )
        document = {"secret": new_secret(), **document} if document.get("secret") is None else document
        batch = Batch.parse(document.get("batch"))
        return replace(base.changed(namespace, {k: v for k, v in document.items() if k != "batch"}), batch=batch)

    def changed(self, namespace: Namespace, document: Any) -> Webhook:
        """This webhook with the fields of a ``PATCH`` body applied and checked."""
        if not isinstance(document, dict):
            raise BadRequest("body must be a JSON object")
        unknown = set(document) - _FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        if "batch" in document and Batch.parse(document["batch"]) != self.batch:
            raise BadRequest("a webhook's batch settings cannot change: create another webhook")
        changes: dict[str, Any] = {}
        if "url" in document:
            parse_url(document["url"])
            changes["url"] = document["url"]
        if "filter" in document:
            if not isinstance(document["filter"], str):
                raise BadRequest("filter must be a topic filter string")
            changes["filter"] = namespace.filter(document["filter"])
        if "secret" in document:
            if not isinstance(document["secret"], str):
                raise BadRequest("secret must be a string whsec_<base64>")
            secret_key(document["secret"])
            changes["secret"] = document["secret"]
        if "headers" in document:
            changes["headers"] = _headers(document["headers"])
        if "dead_letter_queue" in document:
            if not isinstance(document["dead_letter_queue"], str):
                raise BadRequest("dead_letter_queue must be a queue name")
            changes["dead_letter_queue"] = validate_topic(namespace.short(document["dead_letter_queue"]))
        if "max_age_seconds" in document:
            age = document["max_age_seconds"]
            if age is not None and (
                not isinstance(age, int | float) or isinstance(age, bool) or not 0.1 <= age <= 30 * 86400
            ):
                raise BadRequest("max_age_seconds must be a number of seconds from 0.1 to 2592000, or null")
            changes["max_age_seconds"] = None if age is None else float(age)
        if "paused" in document:
            if not isinstance(document["paused"], bool):
                raise BadRequest("paused must be true or false")
            changes["paused"] = document["paused"]
        if "description" in document:
            if not isinstance(document["description"], str) or len(document["description"]) > 500:
                raise BadRequest("description must be a string of at most 500 characters")
            changes["description"] = document["description"]
        return replace(self, **changes)


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise BadRequest(f"headers must be an object of at most {MAX_HEADERS} string values")
    out: dict[str, str] = {}
    for name, text in value.items():
        if (
            not isinstance(name, str)
            or not isinstance(text, str)
            or not name
            or not name.isascii()
            or any(c in name for c in " :\r\n\t")
            or any(c in text for c in "\r\n")
        ):
            raise BadRequest("headers must map header names to single-line string values")
        if name.lower() in _RESERVED_HEADERS:
            raise BadRequest(f"header {name!r} is set by the gateway")
        out[name] = text
    return out
