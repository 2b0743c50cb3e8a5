"""The one publish path every front-end calls: ``Publisher.publish`` (awaited) and ``publish_then`` (a callback).

It resolves the name inside the token's namespace, checks the token's publish
permission and the size limit, lets the billing guard admit the message (plan
size, rate limit, quota and balance: 413/429/402, nothing refused is sent), and
stores it in JetStream; a message not stored, or a duplicate, is refunded.
Front-ends only translate their wire format into a ``Payload`` and the result back.

Both, and ``publish_now`` (a connection's hot path, to an ``Outlet`` it keeps),
end in ``Publisher._send``, where the hub's core-tier sinks in this process
(``Hub.published``) get each message: an MQTT QoS 0 message as it is sent
(acknowledged or not), any other once stored and not a duplicate; so each
publisher's messages of one QoS arrive in the order sent [MQTT-4.6.0-6].
"""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import Histogram

from gateway.billing import BillingGuard
from gateway.bus import Bus, PubAck, Settle, settle
from gateway.bus import Outlet as BusOutlet
from gateway.errors import BadRequest, FlowGateError, Forbidden, PayloadTooLarge
from gateway.metrics import LATENCY_SAMPLE, Metrics, Tally
from gateway.payload import QOS_HEADER, Payload
from gateway.principal import Principal
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.hub import Hub
    from gateway.tracing import Tracing

MAX_IDEMPOTENCY_KEY = 200
RESERVED = ("$events/", "$presence/")  # written only by the gateway (gateway.events)


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    full_name: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Route:
    """Where a name published to goes: its validated topic (publish permission checked) and NATS subject."""

    topic: str
    subject: str


class AdmitLater(Exception):
    """``Publisher.publish_now`` could not decide without waiting (the billing guard must ask NATS): use
    ``publish_then``."""


class Publisher:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        metrics: Metrics,
        *,
        guard: BillingGuard | None = None,
        local: Hub | None = None,  # its core-tier sinks get this process's publishes (Hub.published)
        tracing: Tracing | None = None,  # spans per publish and a traceparent in the message (gateway/tracing.py)
    ) -> None:
        self._tracing = tracing
        self._bus = bus
        self._local = local
        self._metrics = metrics
        self._max_bytes = settings.max_message_bytes
        self._counters: dict[str, Tally] = {}  # published messages per protocol
        self._latencies: dict[int, Histogram] = {}  # publish latency per protocol, by id() of its Tally
        self._tenants = metrics.tenants  # messages per user, bounded labels
        self._sampled = 0
        self._guard = guard  # quota, balance and rate limit (gateway.billing); refused messages are never sent

    def resolve(self, claims: Principal, name: str) -> str:
        """The validated topic ``name`` refers to, if the token may publish there."""
        topic = claims.namespace.topic(name)
        if topic[:1] == "$" and topic.startswith(RESERVED):
            raise Forbidden(f"{topic!r} is reserved for the gateway's connection events and presence")
        if not claims.permissions.publish.permits_topic(topic):
            raise Forbidden(f"this token may not publish to {topic!r}")
        return topic

    def route(self, claims: Principal, name: str) -> Route:
        """``resolve`` plus the NATS subject: what a connection may keep for the names it publishes to often."""
        topic = self.resolve(claims, name)
        return Route(topic, claims.namespace.subject(topic))

    async def publish(
        self,
        claims: Principal,
        name: str,
        payload: Payload,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Published:
        """Store ``payload`` on topic ``name`` for ``protocol``'s client; ``headers`` travel with it (e.g. MQTT QoS).

        ``publish_then``, awaited until JetStream stored the message.
        """
        route = self.route(claims, name)
        stored: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        await self.publish_then(
            claims,
            route,
            payload,
            partial(settle, stored),
            protocol=protocol,
            idempotency_key=idempotency_key,
            headers=headers,
        )
        ack = await stored
        return Published(route.topic, claims.namespace.full(route.topic), ack.seq, ack.duplicate)

    async def publish_then(
        self,
        claims: Principal,
        route: Route | str,
        payload: Payload,
        then: Settle | None,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish for pipelining front-ends (WebSocket, MQTT): every check happens (and raises) here, then the
        message is sent, and this returns without waiting for JetStream.

        ``route`` is a name or a ``Route`` from ``route()``. ``then(ack, None)``
        is called once the message is stored, or ``then(None, error)``, after the
        publisher's own accounting. With ``then=None`` (MQTT QoS 0) JetStream is
        not asked for an acknowledgement at all.
        """
        if isinstance(route, str):
            route = self.route(claims, route)
        tracing = self._tracing
        with nullcontext() if tracing is None else tracing.publish(protocol, claims.namespace.full(route.topic)):
            self._check_size(payload)
            msg_id = self._msg_id(claims, idempotency_key)
            if self._guard is not None:
                with nullcontext() if tracing is None else tracing.admission():
                    await self._guard.admit(claims, len(payload.body), protocol=protocol)
            if tracing is None:
                overfull = self._send(self._outlet(claims, route, protocol, headers), payload, then, msg_id)
            else:
                overfull = self._send_traced(tracing, claims, route, payload, then, protocol, msg_id, headers)
            if overfull:
                await self._bus.drain()

    def _send_traced(
        self,
        tracing: Tracing,
        claims: Principal,
        route: Route,
        payload: Payload,
        then: Settle | None,
        protocol: str,
        msg_id: str | None,
        headers: dict[str, str] | None,
    ) -> bool:
        """``_send`` in a ``store`` span, ended at the acknowledgement; the message carries its traceparent."""
        headers = dict(headers or {})
        span = tracing.store(headers)
        traced = then
        if then is not None:

            def traced(ack: PubAck | None, error: FlowGateError | None) -> None:
                tracing.stored(span, error)
                then(ack, error)

        try:
            overfull = self._send(self._outlet(claims, route, protocol, headers), payload, traced, msg_id)
        except BaseException as exc:
            tracing.stored(span, exc if isinstance(exc, Exception) else None)
            raise
        if then is None:
            tracing.stored(span, None)  # not acknowledged (MQTT QoS 0): sent is all there is
        return overfull

    def outlet(self, claims: Principal, name: str, *, protocol: str, headers: dict[str, str] | None = None) -> Outlet:
        """A topic a connection publishes to again and again, resolved once for ``publish_now``.

        Raises as ``route`` does when the token may not publish there. Its acknowledgements carry no
        stream sequence: the bus may store its publishes in fast batches (``Bus.outlet(batched=True)``).
        """
        return self._outlet(claims, self.route(claims, name), protocol, headers, batched=True)

    def publish_now(
        self, outlet: Outlet, payload: Payload, then: Settle | None, *, frames: dict[str, bytes] | None = None
    ) -> bool:
        """``publish_then`` to a prepared ``outlet`` without a coroutine (a connection's hot path).

        Returns whether the bus wants a ``drain()`` now. Raises ``AdmitLater``,
        having sent nothing, when the billing guard must wait for NATS first:
        then call ``publish_then``. ``frames``: renderings of the message the
        front-end already has, for local subscribers (``Hub.published``).
        """
        if self._tracing is not None:
            raise AdmitLater  # traced publishes take ``publish_then`` (a span each)
        size = len(payload.body)
        if size > self._max_bytes:
            self._check_size(payload)  # raises
        guard = self._guard
        if guard is not None and not guard.admit_now(outlet.claims, size, protocol=outlet.protocol):
            raise AdmitLater
        return self._send(outlet, payload, then, None, frames)

    def _outlet(
        self, claims: Principal, route: Route, protocol: str, headers: dict[str, str] | None, *, batched: bool = False
    ) -> Outlet:
        bus_outlet = self._bus.outlet(route.subject, headers, batched=batched)
        return Outlet(claims, route.topic, protocol, bus_outlet, self._counter(protocol), _qos(headers))

    def _msg_id(self, claims: Principal, idempotency_key: str | None) -> str | None:
        if idempotency_key is None:
            return None
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise BadRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
        return claims.namespace.prefix + idempotency_key

    def _check_size(self, payload: Payload) -> None:
        if len(payload.body) > self._max_bytes:
            raise PayloadTooLarge(f"message is {len(payload.body)} bytes; the limit is {self._max_bytes}")

    def _send(
        self,
        outlet: Outlet,
        payload: Payload,
        then: Settle | None,
        msg_id: str | None = None,
        frames: dict[str, bytes] | None = None,
    ) -> bool:
        """Send an admitted message (refunded when it is not sent, not stored, or a duplicate); True when the
        bus wants a ``drain()``.

        The local hand-off rule: this process's core-tier sinks get a message
        sent without an acknowledgement (``then=None``) or at QoS 0 as it is sent,
        any other once stored and not a duplicate (``_stored``).
        """
        claims = outlet.claims
        local = self._local
        as_sent = then is None or outlet.qos == 0
        try:
            if then is None:
                overfull = outlet.bus.publish_then(payload, None)
                outlet.counter.add()
                if self._tenants is not None:
                    self._tenants.add(claims.namespace.user_id)
            else:
                stored = self._stored(outlet, payload, then, None if as_sent else local)
                overfull = outlet.bus.publish_then(payload, stored, msg_id)
        except BaseException:
            if self._guard is not None:
                self._guard.refund(claims)
            raise
        if as_sent and local is not None:
            local.published(outlet.bus.subject, claims.namespace, outlet.topic, payload, outlet.qos, frames)
        return overfull

    def _stored(self, outlet: Outlet, payload: Payload, then: Settle, local: Hub | None) -> Settle:
        """The acknowledgement callback of one message: metrics, billing and ``local``'s core-tier sinks
        first (``_on_stored``), then the caller's ``then``; one message in ``LATENCY_SAMPLE`` is timed.

        (A ``partial`` of a method: a closure over all of this would make ten cells per message.)
        """
        stored: Settle = partial(self._on_stored, outlet, payload, then, local)
        self._sampled += 1
        if self._sampled % LATENCY_SAMPLE == 0 and (timer := self._latencies.get(id(outlet.counter))) is not None:
            return _timed(timer, stored)
        return stored

    def _on_stored(
        self,
        outlet: Outlet,
        payload: Payload,
        then: Settle,
        local: Hub | None,
        ack: PubAck | None,
        error: FlowGateError | None,
    ) -> None:
        claims = outlet.claims
        guard = self._guard
        if ack is None:
            if guard is not None:
                guard.refund(claims)  # not stored: not billed
        else:
            if ack.duplicate:
                if guard is not None:
                    guard.refund(claims)  # a retry of a message already stored and billed
            elif local is not None:
                local.published(outlet.bus.subject, claims.namespace, outlet.topic, payload, outlet.qos)
            outlet.counter.add()
            if self._tenants is not None:
                self._tenants.add(claims.namespace.user_id)
        then(ack, error)

    def _counter(self, protocol: str) -> Tally:
        counter = self._counters.get(protocol)
        if counter is None:
            counter = self._counters[protocol] = Tally(self._metrics.published.labels(protocol))
            self._latencies[id(counter)] = self._metrics.publish_latency.labels(protocol)
        return counter


@dataclass(slots=True)
class Outlet:
    """One topic of one token, resolved for publishing (``Publisher.outlet``; ``publish_then`` makes one per
    message): the publish permission checked, the NATS subject and header blocks encoded once
    (``gateway.bus.Outlet``). Each message still gets the size check and the billing guard's decision.

    Treat as immutable (not frozen: a frozen dataclass costs more to make, once per HTTP or WebSocket publish).
    """

    claims: Principal
    topic: str
    protocol: str
    bus: BusOutlet
    counter: Tally
    qos: int


def _timed(timer: Histogram, stored: Settle) -> Settle:
    """``stored``, observing the time from now until the acknowledgement in ``timer``."""
    started = time.perf_counter()

    def timed(ack: PubAck | None, error: FlowGateError | None) -> None:
        timer.observe(time.perf_counter() - started)
        stored(ack, error)

    return timed


def _qos(headers: dict[str, str] | None) -> int:
    """The MQTT QoS a message travels with (``Fg-QoS``); other protocols' messages count as QoS 1."""
    value = headers.get(QOS_HEADER) if headers else None
    return int(value) if value in ("0", "1", "2") else 1
