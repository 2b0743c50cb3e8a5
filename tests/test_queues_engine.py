"""The queue engine in-process on a real nats-server: failures the HTTP API cannot provoke.

A crash between the dead-letter publish and the source acknowledgement, a pull
abandoned by its caller, and two replicas creating the same queue at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from auth.permissions import Permissions
from auth.secrets import ServerSecrets
from auth.tokens import Claims
from gateway.bus import Bus
from gateway.bus.queues import CONSUMER, DeliveryRef, queue_stream
from gateway.errors import Unavailable
from gateway.metrics import Metrics
from gateway.payload import Payload
from gateway.queues import QueueEngine, SendEntry, Sent
from gateway.settings import Settings
from gateway.topics import Namespace
from tests import waiting
from tests.harness import NatsServer


@pytest.fixture
async def parts(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[tuple[Settings, Bus, ServerSecrets]]:
    settings = Settings.from_env({}, data_dir=tmp_path, nats_url=nats_server.url, secret_key="k" * 32)
    bus = Bus(settings)
    await bus.connect([nats_server.url])
    yield settings, bus, ServerSecrets.load(settings)
    await bus.close()


@pytest.fixture
async def engine(parts: tuple[Settings, Bus, ServerSecrets]) -> AsyncIterator[QueueEngine]:
    settings, bus, secrets_ = parts
    engine = await QueueEngine.open(settings, bus, secrets_, Metrics())
    yield engine
    await engine.close()


def claims() -> Claims:
    return Claims(Namespace("u" + secrets.token_hex(4), "app"), 0, 2**40, "jti", Permissions())


def entry(text: str) -> SendEntry:
    return SendEntry(Payload.from_value(text))


async def test_dead_letter_move_is_exactly_once_across_a_crash(engine: QueueEngine) -> None:
    who = claims()
    policy = {"dead_letter_queue": "dlq", "max_receive_count": 1}
    await engine.set_attributes(who, "src", {"visibility_timeout": 1, "redrive_policy": policy})
    [sent] = await engine.send_messages(who, "src", [entry("poison")])
    assert isinstance(sent, Sent)
    [first] = await engine.receive(who, "src")
    assert first.receive_count == 1

    real_ack = engine._wq.ack
    crashed = asyncio.Event()

    async def ack_that_crashes_once(stream: str, ref: DeliveryRef) -> None:
        if not crashed.is_set():
            crashed.set()
            raise Unavailable("gateway died between the dead-letter publish and the source ack")
        await real_ack(stream, ref)

    engine._wq.ack = ack_that_crashes_once  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await engine.receive(who, "src", wait_seconds=5)  # redelivered: moved, but the ack is lost
    assert crashed.is_set()
    assert await engine.receive(who, "src", wait_seconds=5) == []  # redelivered again: moved again, acked
    dead = await engine.receive(who, "dlq", max_messages=10, visibility_timeout=60)
    assert [(m.message_id, m.payload.body) for m in dead] == [(sent.message_id, b"poison")]
    info = await engine.get_queue(who, "dlq")
    assert (info.counts.visible, info.counts.in_flight) == (0, 1)
    assert (await engine.get_queue(who, "src")).counts.in_flight == 0


async def test_abandoned_pull_releases_its_message_without_counting_it(
    engine: QueueEngine, nats_server: NatsServer
) -> None:
    who = claims()
    await engine.set_attributes(who, "q", {"visibility_timeout": 30})
    stream = queue_stream((await engine.get_queue(who, "q")).record.id)
    poll = asyncio.create_task(engine.receive(who, "q", wait_seconds=10))
    nc = await nats.connect(nats_server.url)
    try:  # the event: nats-server holds the long poll's pull request
        await waiting.poll(
            lambda: nc.jetstream().consumer_info(stream, CONSUMER),
            lambda info: (info.num_waiting or 0) > 0,
            what="the long poll waiting on the server",
            timeout=5,
            every=0.02,
        )
    finally:
        await nc.close()
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    await engine.send_messages(who, "q", [entry("late")])  # delivered to the abandoned pull's inbox
    [message] = await engine.receive(who, "q", wait_seconds=5)  # released at once, not after 30 s
    assert message.receive_count == 1


async def test_replicas_creating_one_queue_agree(parts: tuple[Settings, Bus, ServerSecrets]) -> None:
    settings, bus, secrets_ = parts
    a = await QueueEngine.open(settings, bus, secrets_, Metrics())
    b = await QueueEngine.open(settings, bus, secrets_, Metrics())
    try:
        who = claims()
        results = await asyncio.gather(
            *(e.send_messages(who, "shared", [entry(e_name)]) for e_name, e in (("a", a), ("b", b)))
        )
        assert all(not isinstance(r, Exception) for [r] in results)
        records = await a.list_queues(who)
        assert [r.name for r in records] == ["shared"]
        got = await b.receive(who, "shared", max_messages=10, wait_seconds=1)
        if len(got) < 2:
            got += await b.receive(who, "shared", max_messages=10, wait_seconds=1)
        assert sorted(m.payload.body for m in got) == [b"a", b"b"]
    finally:
        await a.close()
        await b.close()


async def test_many_first_sends_create_one_queue(engine: QueueEngine) -> None:
    who = claims()
    results = await asyncio.gather(*(engine.send_messages(who, "herd", [entry(str(i))]) for i in range(500)))
    assert all(not isinstance(r, Exception) for [r] in results)
    assert [r.name for r in await engine.list_queues(who)] == ["herd"]
    info = await engine.get_queue(who, "herd")
    assert info.counts.visible == 500
