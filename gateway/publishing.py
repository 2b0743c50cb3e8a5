"""The one publish path every front-end calls.

It resolves the name inside the token's namespace, checks the token's publish
permission and the size limit, lets the billing guard admit the message (plan
size, rate limit, quota and balance: 413/429/402, nothing refused is sent), and
stores it in JetStream; a message not stored, or a duplicate, is refunded.
Front-ends only translate their wire format into a ``Payload`` and the result back.

The hub's core-tier sinks in this process (``Hub.published``) get each
message here: an MQTT QoS 0 message as it is sent (acknowledged or not), any
other once stored and not a duplicate; so each publisher's messages of one QoS
arrive in the order sent [MQTT-4.6.0-6].
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

from prometheus_client import Histogram

from gateway.billing import BillingGuard
from gateway.bus import Bus, PubAck, Settle
from gateway.bus import Outlet as BusOutlet
from gateway.errors import BadRequest, FlowGateError, Forbidden, PayloadTooLarge, Unavailable
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
    """``Outlet.submit_now`` could not decide without waiting (the billing guard must ask NATS): use ``submit``."""


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
        """Store ``payload`` on topic ``name`` for ``protocol``'s client; ``headers`` travel with it (e.g. MQTT QoS)."""
        route = self.route(claims, name)
        submitted = await self.submit(
            claims, route, payload, protocol=protocol, idempotency_key=idempotency_key, headers=headers
        )
        assert submitted is not None
        ack = await submitted
        return Published(route.topic, claims.namespace.full(route.topic), ack.seq, ack.duplicate)

    async def submit(
        self,
        claims: Principal,
        route: Route | str,
        payload: Payload,
        *,
        protocol: str,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        acknowledged: bool = True,
        then: Settle | None = None,
    ) -> asyncio.Future[PubAck] | None:
        """``publish`` for pipelining front-ends (WebSocket, MQTT): every check happens (and raises) here, then
        the message is sent and the returned future resolves once JetStream stored it.

        ``route`` is a name or a ``Route`` from ``route()``. With ``then``, no
        future: ``then(ack, None)`` is called once the message is stored, or
        ``then(None, error)``, after the publisher's own accounting, and ``None``
        is returned. With ``acknowledged=False`` (MQTT QoS 0) JetStream is not
        asked for an acknowledgement at all and ``None`` is returned once sent.
        """
        if isinstance(route, str):
            route = self.route(claims, route)
        if self._tracing is not None:
            return await self._submit_traced(
                self._tracing, claims, route, payload, protocol, idempotency_key, headers, acknowledged, then
            )
        self._check_size(payload)
        msg_id = self._msg_id(claims, idempotency_key)
        if self._guard is not None:
            await self._guard.admit(claims, len(payload.body), protocol=protocol)
        future, overfull = self._send(claims, route, payload, protocol, msg_id, headers, acknowledged, then)
        if overfull:
            await self._bus.drain()
        return future

    async def _submit_traced(
        self,
        tracing: Tracing,
        claims: Principal,
        route: Route,
        payload: Payload,
        protocol: str,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
        acknowledged: bool,
        then: Settle | None,
    ) -> asyncio.Future[PubAck] | None:
        """``submit`` in a ``publish`` span: ``admission`` around the guard, ``store`` until the acknowledgement."""
        with tracing.publish(protocol, claims.namespace.full(route.topic)):
            self._check_size(payload)
            msg_id = self._msg_id(claims, idempotency_key)
            if self._guard is not None:
                with tracing.admission():
                    await self._guard.admit(claims, len(payload.body), protocol=protocol)
            headers = dict(headers or {})
            span = tracing.store(headers)
            traced = then
            if then is not None:

                def traced(ack: PubAck | None, error: FlowGateError | None) -> None:
                    tracing.stored(span, error)
                    then(ack, error)

            try:
                future, overfull = self._send(claims, route, payload, protocol, msg_id, headers, acknowledged, traced)
            except BaseException as exc:
                tracing.stored(span, exc if isinstance(exc, Exception) else None)
                raise
            if future is not None:
                future.add_done_callback(
                    lambda f: tracing.stored(span, None if f.cancelled() else cast(Exception | None, f.exception()))
                )
            elif then is None:
                tracing.stored(span, None)  # not acknowledged (MQTT QoS 0): sent is all there is
            if overfull:
                await self._bus.drain()
            return future

    def outlet(self, claims: Principal, name: str, *, protocol: str, headers: dict[str, str] | None = None) -> Outlet:
        """A topic a connection publishes to again and again, prepared once (``route`` and the bus's ``Outlet``).

        Raises as ``route`` does when the token may not publish there.
        """
        route = self.route(claims, name)
        bus_outlet = self._bus.outlet(route.subject, headers)
        return Outlet(self, claims, route.topic, bus_outlet, self._counter(protocol), _qos(headers))

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
        claims: Principal,
        route: Route,
        payload: Payload,
        protocol: str,
        msg_id: str | None,
        headers: dict[str, str] | None,
        acknowledged: bool,
        then: Settle | None,
    ) -> tuple[asyncio.Future[PubAck] | None, bool]:
        """Send an admitted message; refund it when it is not sent, not stored, or a duplicate."""
        guard = self._guard
        counter = self._counter(protocol)
        bus = self._bus
        qos = _qos(headers)
        future: asyncio.Future[PubAck] | None = None
        try:
            if not acknowledged:
                overfull = bus.emit_now(route.subject, payload, headers=headers)
                counter.add()
                if self._tenants is not None:
                    self._tenants.add(claims.namespace.user_id)
            else:
                stored = self._stored(claims, counter, then, route.subject, route.topic, payload, qos)
                if then is not None:
                    overfull = bus.send_then(route.subject, payload, stored, msg_id=msg_id, headers=headers)
                else:
                    future, overfull = bus.send_now(route.subject, payload, msg_id=msg_id, headers=headers)
                    future.add_done_callback(partial(_settle_from, stored))
        except BaseException:
            if guard is not None:
                guard.refund(claims)
            raise
        if self._local is not None and (qos == 0 or not acknowledged):  # the others once stored (_stored)
            self._local.published(route.subject, claims.namespace, route.topic, payload, qos)
        return future, overfull

    def _counter(self, protocol: str) -> Tally:
        counter = self._counters.get(protocol)
        if counter is None:
            counter = self._counters[protocol] = Tally(self._metrics.published.labels(protocol))
            self._latencies[id(counter)] = self._metrics.publish_latency.labels(protocol)
        return counter

    def _stored(
        self,
        claims: Principal,
        counter: Tally,
        then: Settle | None,
        subject: str,
        topic: str,
        payload: Payload,
        qos: int,
    ) -> Settle:
        """The acknowledgement callback of one message: metrics, billing and local core-tier subscribers
        first, then the caller's ``then``."""
        guard = self._guard
        local = self._local
        tenants = self._tenants
        self._sampled += 1
        timer = self._latencies.get(id(counter)) if self._sampled % LATENCY_SAMPLE == 0 else None
        started = time.perf_counter() if timer is not None else 0.0

        def stored(ack: PubAck | None, error: FlowGateError | None) -> None:
            if timer is not None:
                timer.observe(time.perf_counter() - started)
            if ack is None:
                if guard is not None:
                    guard.refund(claims)  # not stored: not billed
            else:
                if ack.duplicate:
                    if guard is not None:
                        guard.refund(claims)  # a retry of a message already stored and billed
                elif local is not None and qos:  # QoS 0 went to them as it was sent
                    local.published(subject, claims.namespace, topic, payload, qos)
                counter.add()
                if tenants is not None:
                    tenants.add(claims.namespace.user_id)
            if then is not None:
                then(ack, error)

        return stored


class Outlet:
    """One topic of one token, prepared for a connection's hot path (``Publisher.outlet``).

    The publish permission was checked once; the NATS subject and header blocks
    are encoded once (``gateway.bus.Outlet``). Each message still gets the size
    check and the billing guard's decision.
    """

    __slots__ = ("_bus_outlet", "_claims", "_counter", "_publisher", "_qos", "topic")

    def __init__(
        self, publisher: Publisher, claims: Principal, topic: str, bus_outlet: BusOutlet, counter: Tally, qos: int
    ) -> None:
        self._publisher = publisher
        self._claims = claims
        self.topic = topic
        self._bus_outlet = bus_outlet
        self._counter = counter
        self._qos = qos

    def submit_now(
        self, payload: Payload, then: Settle | None, *, protocol: str, frames: dict[str, bytes] | None = None
    ) -> bool:
        """``Publisher.submit`` without a coroutine: ``then(ack, error)`` once stored, or, with ``then=None``,
        sent without asking JetStream for an acknowledgement (MQTT QoS 0).

        Returns whether the bus wants a ``drain()`` now. Raises ``AdmitLater``,
        having sent nothing, when the billing guard must wait for NATS first:
        then call ``submit``. ``frames``: renderings of the message the front-end
        already has, for local subscribers (``Hub.published``).
        """
        publisher = self._publisher
        if publisher._tracing is not None:
            raise AdmitLater  # traced publishes take ``submit`` (a span each), which the caller falls back to
        size = len(payload.body)
        if size > publisher._max_bytes:
            publisher._check_size(payload)  # raises
        guard = publisher._guard
        claims = self._claims
        if guard is not None and not guard.admit_now(claims, size, protocol=protocol):
            raise AdmitLater
        try:
            bus_outlet = self._bus_outlet
            qos = self._qos
            if then is None:
                overfull = bus_outlet.emit(payload)
                self._counter.add()
                if publisher._tenants is not None:
                    publisher._tenants.add(claims.namespace.user_id)
            else:
                stored = publisher._stored(claims, self._counter, then, bus_outlet.subject, self.topic, payload, qos)
                overfull = bus_outlet.send_then(payload, stored)
        except BaseException:
            if guard is not None:
                guard.refund(claims)
            raise
        local = publisher._local
        if local is not None and (qos == 0 or then is None):  # as sent; the others once stored (_stored)
            local.published(bus_outlet.subject, claims.namespace, self.topic, payload, qos, frames)
        return overfull


def _settle_from(stored: Settle, future: asyncio.Future[PubAck]) -> None:
    """``stored`` told the outcome of a publish's future."""
    if future.cancelled():
        stored(None, Unavailable("cancelled"))
    else:
        error = future.exception()
        stored(future.result() if error is None else None, cast(FlowGateError | None, error))


def _qos(headers: dict[str, str] | None) -> int:
    """The MQTT QoS a message travels with (``Fg-QoS``); other protocols' messages count as QoS 1."""
    value = headers.get(QOS_HEADER) if headers else None
    return int(value) if value in ("0", "1", "2") else 1
