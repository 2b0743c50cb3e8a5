"""The fan-out hub's two tiers on a real nats-server: stored (JetStream) and at most once (local + core NATS)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import nats
import pytest

from auth.permissions import Permissions
from auth.tokens import Claims
from gateway.bus import Bus
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.payload import Delivery, Payload
from gateway.publishing import Publisher
from gateway.settings import Settings
from gateway.topics import Namespace
from tests.harness import NatsServer

pytestmark = pytest.mark.timeout(60)


@dataclass(eq=False)
class Collector:
    """A sink that records what it is handed and lets a test wait for a count."""

    got: list[Delivery] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, delivery: Delivery) -> None:
        self.got.append(delivery)
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()
        return [d.payload.body for d in self.got]


@dataclass
class Parts:
    nats: NatsServer
    bus: Bus
    hub: Hub
    publisher: Publisher
    claims: Claims

    def subject(self, topic: str) -> str:
        return self.claims.namespace.subject(topic)

    def filter(self, topic_filter: str) -> str:
        [subject] = self.claims.namespace.filter_subjects(topic_filter)
        return subject


@pytest.fixture
async def parts(make_nats: Callable[[], NatsServer]) -> AsyncIterator[Parts]:
    server = make_nats()
    bus = Bus(Settings())
    await bus.connect([server.url], attempts_timeout=10)
    hub = Hub(bus)
    publisher = Publisher(bus.settings, bus, Metrics(), local=hub)
    claims = Claims(Namespace("u" + secrets.token_hex(4), "app"), 0, 2**40, "jti", Permissions())
    try:
        yield Parts(server, bus, hub, publisher, claims)
    finally:
        await hub.close()
        await bus.close()


async def publish(parts: Parts, topic: str, body: bytes, qos: int | None = None) -> None:
    headers = None if qos is None else {"Fg-QoS": str(qos)}
    await parts.publisher.publish(parts.claims, topic, Payload.from_bytes(body), protocol="test", headers=headers)


async def test_local_publishes_reach_core_sinks_once_and_in_order(parts: Parts) -> None:
    quick, stored = Collector(), Collector()
    await parts.hub.add(parts.filter("room/+"), quick, core=True)
    await parts.hub.add(parts.subject("room/a"), stored)
    await publish(parts, "room/a", b"1")
    await publish(parts, "room/a", b"2", qos=0)
    await publish(parts, "room/a", b"3", qos=1)
    assert await stored.wait_for(3) == [b"1", b"2", b"3"]
    assert [d.seq > 0 for d in stored.got] == [True] * 3  # the stored tier has stream sequences
    assert await quick.wait_for(3) == [b"1", b"2", b"3"]
    assert [(d.seq, d.qos, d.topic) for d in quick.got] == [(0, 1, "room/a"), (0, 0, "room/a"), (0, 1, "room/a")]
    # Its own publishes are not echoed back by core NATS. An echo would come on the connection before
    # JetStream's acknowledgement, which is when an acknowledged publish is handed over and returns.
    await publish(parts, "room/b", b"4")
    assert [d.payload.body for d in quick.got] == [b"1", b"2", b"3", b"4"]


async def test_a_deduplicated_retry_is_not_handed_over_twice(parts: Parts) -> None:
    quick = Collector()
    await parts.hub.add(parts.subject("orders"), quick, core=True)
    for _ in range(2):
        await parts.publisher.publish(
            parts.claims, "orders", Payload.from_bytes(b"o-1"), protocol="test", idempotency_key="k-1"
        )
    await publish(parts, "orders", b"o-2")
    assert await quick.wait_for(2) == [b"o-1", b"o-2"]


async def test_other_publishers_arrive_through_core_nats_even_after_a_nats_restart(parts: Parts) -> None:
    quick = Collector()
    await parts.hub.add(parts.subject("feed"), quick, core=True)
    other = await nats.connect(parts.nats.url)  # another replica, or any NATS client
    try:
        await other.publish(parts.subject("feed"), b"remote", headers={"Fg-Type": "text", "Fg-QoS": "0"})
        await other.flush()
        assert await quick.wait_for(1) == [b"remote"]
        assert (quick.got[0].seq, quick.got[0].qos, quick.got[0].topic) == (0, 0, "feed")
    finally:
        await other.close()
    parts.nats.stop()
    parts.nats.start()
    other = await nats.connect(parts.nats.url)
    try:
        async with asyncio.timeout(15):
            while len(quick.got) < 2:  # the subscription comes back with the bus's reconnection
                await other.publish(parts.subject("feed"), b"again")
                await other.flush()
                try:
                    async with asyncio.timeout(0.5):
                        await quick.wait_for(2)
                except TimeoutError:
                    continue
        assert quick.got[1].payload.body == b"again"
    finally:
        await other.close()


async def test_removing_the_last_sink_ends_local_and_core_delivery(parts: Parts) -> None:
    first, second = Collector(), Collector()
    subject = parts.subject("gone")
    await parts.hub.add(subject, first, core=True)
    await parts.hub.add(subject, second, core=True)
    assert parts.hub.subscription_count == 1  # one bus subscription per filter and tier
    await parts.hub.remove(subject, first, core=True)
    await publish(parts, "gone", b"x", qos=0)
    assert await second.wait_for(1) == [b"x"] and first.got == []
    await parts.hub.remove(subject, second, core=True)
    assert parts.hub.subscription_count == 0 and not parts.hub._local.match(subject)
    await publish(parts, "gone", b"y", qos=0)
    other = await nats.connect(parts.nats.url)
    try:
        await other.publish(subject, b"z")
        await other.flush()
    finally:
        await other.close()
    await parts.hub.add(subject, witness := Collector(), core=True)  # a new subscriber sees only new ones
    await publish(parts, "gone", b"w", qos=0)
    assert await witness.wait_for(1) == [b"w"]
    assert [d.payload.body for d in second.got] == [b"x"]


async def test_a_failing_sink_does_not_fail_the_publisher_or_the_others(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def deliver(self, delivery: Delivery) -> None:
            raise RuntimeError("bug in a sink")

    healthy = Collector()
    await parts.hub.add(parts.filter("x/+"), Broken(), core=True)
    await parts.hub.add(parts.subject("x/y"), healthy, core=True)
    await publish(parts, "x/y", b"ok", qos=0)  # does not raise
    assert await healthy.wait_for(1) == [b"ok"]
    assert "local delivery failed" in caplog.text
