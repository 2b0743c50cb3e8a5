"""The one publish path every front-end calls.

It resolves the name inside the token's namespace, checks the token's publish
permission and the size limit, lets the billing guard admit the message (plan
size, rate limit, quota and balance: 413/429/402, nothing refused is sent), and
stores it in JetStream; a message not stored, or a duplicate, is refunded.
Front-ends only translate their wire format into a ``Payload`` and the result back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from auth.tokens import Claims
from gateway.billing import BillingGuard
from gateway.bus import Bus, PubAck
from gateway.errors import BadRequest, Forbidden, PayloadTooLarge
from gateway.metrics import Metrics
from gateway.payload import Payload
from gateway.settings import Settings

MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    full_name: str
    seq: int
    duplicate: bool


class Publisher:
    def __init__(self, settings: Settings, bus: Bus, metrics: Metrics, *, guard: BillingGuard | None = None) -> None:
        self._bus = bus
        self._metrics = metrics
        self._max_bytes = settings.max_message_bytes
        self._counters: dict[str, Any] = {}  # prometheus children per protocol, looked up once
        self._guard = guard  # quota, balance and rate limit (gateway.billing); refused messages are never sent

    def resolve(self, claims: Claims, name: str) -> str:
        """The validated topic ``name`` refers to, if the token may publish there."""
        topic = claims.namespace.topic(name)
        if not claims.permissions.publish.permits_topic(topic):
            raise Forbidden(f"this token may not publish to {topic!r}")
        return topic

    async def publish(
        self,
        claims: Claims,
        name: str,
        payload: Payload,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Published:
        """Store ``payload`` on topic ``name`` for ``protocol``'s client; ``headers`` travel with it (e.g. MQTT QoS)."""
        topic, submitted = await self._submit(
            claims, name, payload, protocol=protocol, idempotency_key=idempotency_key, headers=headers
        )
        assert submitted is not None
        ack = await submitted
        return Published(topic, claims.namespace.full(topic), ack.seq, ack.duplicate)

    async def submit(
        self,
        claims: Claims,
        name: str,
        payload: Payload,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        acknowledged: bool = True,
    ) -> asyncio.Future[PubAck] | None:
        """``publish`` for pipelining front-ends (MQTT): every check happens (and raises) here, then the
        message is sent and the returned future resolves once JetStream stored it.

        With ``acknowledged=False`` (MQTT QoS 0) JetStream is not asked for an
        acknowledgement at all and ``None`` is returned once the message is sent.
        """
        _, future = await self._submit(
            claims,
            name,
            payload,
            protocol=protocol,
            idempotency_key=idempotency_key,
            headers=headers,
            acknowledged=acknowledged,
        )
        return future

    async def _submit(
        self,
        claims: Claims,
        name: str,
        payload: Payload,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        acknowledged: bool = True,
    ) -> tuple[str, asyncio.Future[PubAck] | None]:
        topic = self.resolve(claims, name)
        if len(payload.body) > self._max_bytes:
            raise PayloadTooLarge(f"message is {len(payload.body)} bytes; the limit is {self._max_bytes}")
        msg_id = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
                raise BadRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
            msg_id = claims.namespace.prefix + idempotency_key
        namespace = claims.namespace
        guard = self._guard
        if guard is not None:
            await guard.admit(claims, len(payload.body), protocol=protocol)
        counter = self._counters.get(protocol)
        if counter is None:
            counter = self._counters[protocol] = self._metrics.published.labels(protocol)
        try:
            if not acknowledged:
                await self._bus.emit(namespace.subject(topic), payload, headers=headers)
                counter.inc()
                return topic, None
            acked = await self._bus.send(namespace.subject(topic), payload, msg_id=msg_id, headers=headers)
        except BaseException:
            if guard is not None:
                guard.refund(claims)
            raise

        def done(future: asyncio.Future[PubAck]) -> None:
            # Runs first among the future's callbacks: metrics and billing, no second future per message.
            if future.cancelled() or future.exception() is not None:
                if guard is not None:
                    guard.refund(claims)  # not stored: not billed
                return
            if future.result().duplicate and guard is not None:
                guard.refund(claims)  # a retry of a message already stored and billed
            counter.inc()

        acked.add_done_callback(done)
        return topic, acked
