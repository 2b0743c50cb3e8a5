"""The JetStream acknowledgement dispatcher (``gateway.bus.acks``): raw ack bytes in, futures resolved.

The unit tests feed ``AckInbox`` the bytes nats-py's parser hands over; the
last tests run ``Bus`` against a real ``nats-server -js``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from gateway.bus import Bus, PubAck
from gateway.bus.acks import HEADER_CACHE_SIZE, AckClient, AckInbox
from gateway.errors import BadRequest, Unavailable
from gateway.payload import Delivery, Payload
from gateway.settings import Settings
from tests.harness import NatsServer

PREFIX = "_INBOX.abc."


def _inbox(*tokens: int) -> tuple[AckInbox, dict[int, asyncio.Future[PubAck]]]:
    inbox = AckInbox(PREFIX)
    loop = asyncio.get_running_loop()
    futures = {token: loop.create_future() for token in tokens}
    inbox.pending.update(futures)
    return inbox, futures


def _ack(token: int, body: bytes, headers: bytes | None = None) -> tuple[bytes, bytes, bytes | None]:
    return (PREFIX + str(token)).encode(), body, headers


async def test_out_of_order_acks_resolve_their_own_futures() -> None:
    inbox, futures = _inbox(1, 2, 3)
    inbox.on_message(*_ack(3, b'{"stream":"FG_MESSAGES","seq":12}'))
    inbox.on_message(*_ack(1, b'{"stream":"FG_MESSAGES","seq":10}'))
    assert futures[3].result() == PubAck(12, False)
    assert futures[1].result() == PubAck(10, False)
    assert not futures[2].done()
    inbox.on_message(*_ack(2, b'{"stream":"FG_MESSAGES","seq":11,"duplicate":true}'))
    assert futures[2].result() == PubAck(11, True)
    assert inbox.pending == {}


async def test_a_second_ack_and_unknown_tokens_are_ignored() -> None:
    inbox, futures = _inbox(1)
    inbox.on_message(*_ack(1, b'{"seq":5}'))
    inbox.on_message(*_ack(1, b'{"seq":6}'))  # duplicate delivery of the acknowledgement
    inbox.on_message(*_ack(99, b'{"seq":7}'))  # timed out long ago
    inbox.on_message(PREFIX.encode() + b"not-a-token", b'{"seq":8}', None)
    assert futures[1].result() == PubAck(5, False)


async def test_a_future_failed_by_a_timeout_is_left_alone() -> None:
    inbox, futures = _inbox(1)
    futures[1].set_exception(Unavailable("timed out"))
    inbox.on_message(*_ack(1, b'{"seq":5}'))
    assert isinstance(futures[1].exception(), Unavailable)


async def test_error_acks_map_to_gateway_errors() -> None:
    inbox, futures = _inbox(1, 2, 3)
    inbox.on_message(*_ack(1, b'{"error":{"code":503,"err_code":10077,"description":"jetstream not ready"}}'))
    inbox.on_message(*_ack(2, b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence"}}'))
    inbox.on_message(*_ack(3, b"<not json>"))
    assert isinstance(futures[1].exception(), Unavailable)
    error = futures[2].exception()
    assert isinstance(error, BadRequest) and "wrong last sequence" in error.message
    assert isinstance(futures[3].exception(), Unavailable)


async def test_no_responders_status_is_unavailable() -> None:
    inbox, futures = _inbox(1)
    inbox.on_message(*_ack(1, b"", b"NATS/1.0 503\r\n\r\n"))
    error = futures[1].exception()
    assert isinstance(error, Unavailable) and "503" in error.message


async def test_fail_all_fails_every_pending_future_once() -> None:
    inbox, futures = _inbox(1, 2)
    futures[2].set_result(PubAck(1, False))
    inbox.fail_all(Unavailable("connection lost"))
    assert isinstance(futures[1].exception(), Unavailable)
    assert futures[2].result() == PubAck(1, False)
    assert inbox.pending == {}
    inbox.on_message(*_ack(1, b'{"seq":5}'))  # a late acknowledgement after the failure changes nothing


async def test_header_blocks_are_parsed_once_and_handed_out_as_copies() -> None:
    client = AckClient()
    block = b"NATS/1.0\r\nFg-Type: text\r\nFg-QoS: 1\r\n\r\n"
    first = await client._process_headers(block)
    assert first == {"Fg-Type": "text", "Fg-QoS": "1"}
    first["Fg-QoS"] = "2"  # a receiver changing its copy changes nothing for the next message
    assert await client._process_headers(block) == {"Fg-Type": "text", "Fg-QoS": "1"}
    assert await client._process_headers(b"NATS/1.0 503\r\n\r\n") == {"Status": "503"}
    assert await client._process_headers(None) is None
    for i in range(HEADER_CACHE_SIZE + 10):  # distinct blocks (message ids): the cache stays bounded
        assert await client._process_headers(b"NATS/1.0\r\nNats-Msg-Id: %d\r\n\r\n" % i) == {"Nats-Msg-Id": str(i)}
    assert len(client._header_cache) <= HEADER_CACHE_SIZE


@pytest.fixture
def nats_js(make_nats: Callable[[], NatsServer]) -> NatsServer:
    return make_nats()


async def test_bus_pipelined_publishes_are_acknowledged_in_sequence(nats_js: NatsServer) -> None:
    bus = Bus(Settings())
    await bus.connect([nats_js.url], attempts_timeout=10)
    try:
        payload = Payload.from_bytes(b"hello")
        futures = [asyncio.create_task(bus.publish(f"fg.msg.u1.app.t{i % 3}", payload)) for i in range(500)]
        acks = await asyncio.gather(*futures)
        seqs = [ack.seq for ack in acks]
        assert seqs == sorted(seqs) and len(set(seqs)) == 500
        # Other subscriptions of the same connection still go through nats-py's own dispatch.
        got: list[int] = []
        all_seen = asyncio.Event()

        def on_delivery(delivery: Delivery) -> None:
            got.append(delivery.seq)
            if len(got) == len(seqs):
                all_seen.set()

        sub = await bus.subscribe("fg.msg.u1.app.>", on_delivery, start_seq=seqs[0])
        try:
            async with asyncio.timeout(10):
                await all_seen.wait()
            assert got == seqs
        finally:
            await sub.stop()
        with pytest.raises(Unavailable):  # no stream takes this subject: 503 no responders
            await bus.publish("elsewhere.subject", payload)
        dedupe = await bus.publish("fg.msg.u1.app.d", payload, msg_id="m-1")
        again = await bus.publish("fg.msg.u1.app.d", payload, msg_id="m-1")
        assert (again.seq, again.duplicate) == (dedupe.seq, True)
    finally:
        await bus.close()


async def test_bus_fails_pending_publishes_when_nats_goes_away(nats_js: NatsServer) -> None:
    bus = Bus(dataclasses.replace(Settings(), publish_timeout_seconds=30.0))
    await bus.connect([nats_js.url], attempts_timeout=10)
    try:
        nats_js.stop()
        # Those sent before the bus noticed the disconnect fail with it, the others are refused at once.
        futures = [asyncio.create_task(bus.publish("fg.msg.u1.app.t", Payload.from_bytes(b"x"))) for _ in range(100)]
        async with asyncio.timeout(10):
            results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results)
    finally:
        await bus.close()
