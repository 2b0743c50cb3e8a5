"""Incoming triggers: an unguessable ``/hooks/<id>`` URL whose signed POSTs are published to a topic.

A trigger is a JSON record in the KV bucket ``FG_TRIGGERS`` (owner namespace,
topic, verification scheme, secret). ``receive`` checks the signature, then
publishes the body through the one ``Publisher`` as the owner (the owner's
rate limit, quota and billing apply, protocol ``trigger``), and returns once
JetStream stored it. A delivery id from the scheme becomes the idempotency
key, so a replay within the deduplication window is stored once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from gateway.bus import Bucket, Bus
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.payload import Kind, Payload
from gateway.principal import Owner, Principal
from gateway.publishing import Published, Publisher
from gateway.topics import Namespace
from gateway.triggers.verification import Scheme, verify
from gateway.webhooks.signing import new_secret, secret_key

BUCKET = "FG_TRIGGERS"
PROTOCOL = "trigger"
MAX_TRIGGERS_PER_APP = 100
_TEXT_TYPES = ("application/x-www-form-urlencoded", "application/xml")


@dataclass(frozen=True, slots=True)
class Trigger:
    id: str
    user_id: str
    app: str
    topic: str
    verify: str
    secret: str
    created_at: int

    @property
    def namespace(self) -> Namespace:
        return Namespace(self.user_id, self.app)

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        body = asdict(self)
        del body["user_id"]
        if not with_secret or not self.secret:
            del body["secret"]
        body["path"] = f"/hooks/{self.id}"
        return body


def payload_of(content_type: str | None, body: bytes) -> Payload:
    """The message a request body makes: JSON stays JSON, text stays text, anything else is binary."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("the body is not valid JSON (Content-Type: application/json)") from None
        return Payload(body, Kind.JSON)
    if not media:
        return Payload.from_bytes(body)
    if media.startswith("text/") or media in _TEXT_TYPES:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return Payload(body, Kind.BINARY)
        return Payload(body, Kind.TEXT)
    return Payload(body, Kind.BINARY)


class Triggers:
    def __init__(self, records: Bucket, publisher: Publisher) -> None:
        self._records = records
        self._publisher = publisher

    @classmethod
    async def open(cls, bus: Bus, publisher: Publisher) -> Triggers:
        return cls(await bus.bucket(BUCKET), publisher)

    async def create(self, claims: Principal, document: Any) -> Trigger:
        if not isinstance(document, dict) or set(document) - {"topic", "verify", "secret"}:
            raise BadRequest('body must be {"topic": ..., "verify": ..., "secret": ...}')
        if not isinstance(document.get("topic"), str):
            raise BadRequest("topic is required")
        topic = self._publisher.resolve(claims, document["topic"])  # the token may publish there
        try:
            scheme = Scheme(document.get("verify", "none"))
        except ValueError:
            raise BadRequest(f"verify must be one of {', '.join(s.value for s in Scheme)}") from None
        secret = document.get("secret")
        if scheme is Scheme.NONE:
            if secret is not None:
                raise BadRequest('a secret needs a verify scheme other than "none"')
            secret = ""
        elif secret is None:
            secret = new_secret() if scheme is not Scheme.GITHUB else secrets.token_hex(20)
        elif not isinstance(secret, str) or not 8 <= len(secret) <= 256:
            raise BadRequest("secret must be a string of 8 to 256 characters")
        if scheme is Scheme.STANDARD_WEBHOOKS:
            secret_key(secret)
        if len(await self.list_all(claims)) >= MAX_TRIGGERS_PER_APP:
            raise Forbidden(f"an app has at most {MAX_TRIGGERS_PER_APP} triggers")
        trigger = Trigger(
            "tr_" + secrets.token_urlsafe(24), claims.user_id, claims.app, topic, scheme.value, secret, int(time.time())
        )
        await self._records.create(trigger.id, orjson.dumps(asdict(trigger)))
        return trigger

    async def _find(self, trigger_id: str) -> Trigger | None:
        if not trigger_id.startswith("tr_") or len(trigger_id) > 64:
            return None
        if not all(c.isalnum() or c in "-_" for c in trigger_id):
            return None
        entry = await self._records.get(trigger_id)
        return Trigger(**orjson.loads(entry.value)) if entry is not None else None

    async def get(self, claims: Principal, trigger_id: str) -> Trigger:
        trigger = await self._find(trigger_id)
        if trigger is None or trigger.namespace != claims.namespace:
            raise NotFound(f"no trigger {trigger_id!r}")
        return trigger

    async def list_all(self, claims: Principal) -> list[Trigger]:
        out = []
        for key in await self._records.keys():
            entry = await self._records.get(key)
            if entry is not None:
                trigger = Trigger(**orjson.loads(entry.value))
                if trigger.namespace == claims.namespace:
                    out.append(trigger)
        return sorted(out, key=lambda t: (t.created_at, t.id))

    async def delete(self, claims: Principal, trigger_id: str) -> None:
        trigger = await self.get(claims, trigger_id)
        await self._records.delete(trigger.id)

    async def receive(
        self, trigger_id: str, headers: dict[str, str], content_type: str | None, body: bytes
    ) -> Published:
        """Verify and publish one request to ``/hooks/<id>`` (``headers`` with lower-case names)."""
        trigger = await self._find(trigger_id)
        if trigger is None:
            raise NotFound("no such trigger")
        now = time.time()
        delivery_id = verify(Scheme(trigger.verify), trigger.secret, headers, body, now)
        owner = Owner(trigger.namespace)
        key = f"{trigger.id}:{delivery_id}"[:200] if delivery_id else None
        return await self._publisher.publish(
            owner, trigger.topic, payload_of(content_type, body), protocol=PROTOCOL, idempotency_key=key
        )
