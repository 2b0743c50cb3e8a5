"""``FastParser`` against nats-py's ``Parser``: the same byte streams give the same calls, state and errors.

A recording stand-in for the client takes the calls; the fast parser's
``_dispatch_fast`` either accepts each message or declines it (then
``_process_msg`` is awaited), and both must look the same from outside.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_MSG_PAYLOAD, MAX_CONTROL_LINE_SIZE, Parser

from gateway.bus import Bus
from gateway.bus.acks import AckClient
from gateway.bus.parser import FastParser
from gateway.bus.subscriptions import _delivery_of
from gateway.payload import Delivery, Kind, Payload
from gateway.settings import Settings
from tests.harness import NatsServer

Call = tuple[Any, ...]
counts: list[int] = []  # fast dispatches of the last _both(): stock parser, then FastParser


class Recorder:
    """What nats-py's parser calls on its client, recorded in order."""

    def __init__(self, *, fast: bool = True, reset_on: bytes | None = None) -> None:
        self.calls: list[Call] = []
        self.fast_count = 0  # messages taken by _dispatch_fast
        self.fast = fast
        self.reset_on = reset_on  # a message subject whose handling resets the parser (a reconnect)
        self.parser: Parser | None = None

    def _seen(self, call: Call) -> None:
        self.calls.append(call)
        if self.reset_on is not None and call[:2] == ("msg", self.reset_on) and self.parser is not None:
            self.parser.reset()

    def _dispatch_fast(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> bool:
        if self.fast and self.reset_on is None:
            self.fast_count += 1
            self._seen(("msg", subject, sid, reply, data, headers))
        return self.fast and self.reset_on is None

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self._seen(("msg", subject, sid, reply, data, headers))

    async def _process_ping(self) -> None:
        self._seen(("ping",))

    async def _process_pong(self) -> None:
        self._seen(("pong",))

    async def _process_err(self, err: str) -> None:
        self._seen(("err", err))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self._seen(("info", json.dumps(info, sort_keys=True)))


def _hmsg(subject: bytes, sid: int, reply: bytes, headers: bytes, body: bytes) -> bytes:
    reply_part = reply + b" " if reply else b""
    return b"HMSG %s %d %s%d %d\r\n%s%s\r\n" % (
        subject,
        sid,
        reply_part,
        len(headers),
        len(headers) + len(body),
        headers,
        body,
    )


HEADERS = b"NATS/1.0\r\nFg-Type: binary\r\nFg-QoS: 0\r\n\r\n"
STREAM = b"".join(
    [
        b"+OK\r\n",
        b"MSG foo.bar 1 5\r\nhello\r\n",
        b"MSG foo.bar 12 _INBOX.a.1 0\r\n\r\n",
        b"PING\r\n",
        _hmsg(b"fg.msg.u1.app.t", 3, b"$JS.ACK.FG.c.1.42.7.1732571234123456789.0", HEADERS, b"x" * 100),
        b"PONG\r\n",
        _hmsg(b"fg.msg.u1.app.t", 3, b"", HEADERS, b""),
        b"HMSG _INBOX.hb 4 16 16\r\nNATS/1.0 100\r\n\r\n\r\n",
        b"HMSG foo 5 0 3\r\nabc\r\n",
        b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n',
        b"-ERR 'Stale Connection'\r\n",
        b"MSG  foo   6  7\r\nseven!!\r\n",  # unusual spacing: nats-py's regexes accept it
        b"PING \r\n+OK \r\n",
        b"MSG foo\t7 1\r\nz\r\n",
        b"MSG crlf.in.body 8 4\r\n\r\n\r\n\r\n",
        b"PONG\r\n",
    ]
)


async def _feed(parser: Parser, chunks: list[bytes]) -> BaseException | None:
    try:
        for chunk in chunks:
            await parser.parse(chunk)
    except Exception as exc:  # compared, not swallowed: both parsers must fail alike
        return exc
    return None


def _state(parser: Parser) -> tuple[Any, ...]:
    """What the next call starts from (between messages, nats-py's leftover message arguments mean nothing)."""
    if parser.state == AWAITING_MSG_PAYLOAD:
        return bytes(parser.buf), parser.state, parser.needed, parser.header_needed, dict(parser.msg_arg)
    return bytes(parser.buf), parser.state


async def _both(chunks: list[bytes], *, fast: bool = True, reset_on: bytes | None = None) -> tuple[Any, Any]:
    results = []
    counts.clear()
    for cls in (Parser, FastParser):
        nc = Recorder(fast=fast, reset_on=reset_on)
        parser = cls(nc)
        nc.parser = parser
        error = await _feed(parser, chunks)
        results.append((nc.calls, _state(parser), type(error), str(error) if error else None))
        counts.append(nc.fast_count)
    return results[0], results[1]


@pytest.mark.parametrize("fast", [True, False])
async def test_same_calls_for_a_stream_in_one_chunk(fast: bool) -> None:
    stock, ours = await _both([STREAM], fast=fast)
    assert ours == stock
    assert len(stock[0]) == 15 and stock[2] is type(None)
    assert counts == [0, 6 if fast else 0]  # the canonically spaced messages, before INFO hands over


@pytest.mark.parametrize("fast", [True, False])
async def test_same_calls_and_state_at_every_split(fast: bool) -> None:
    for cut in range(len(STREAM) + 1):
        stock, ours = await _both([STREAM[:cut], STREAM[cut:]], fast=fast)
        assert ours == stock, cut
        # and with the first part stopping short: the state left between two calls is nats-py's
        stock, ours = await _both([STREAM[:cut]], fast=fast)
        assert ours == stock, cut


async def test_same_calls_byte_by_byte() -> None:
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    stock, ours = await _both(chunks)
    assert ours == stock


async def test_many_messages_in_three_chunks() -> None:
    stream = b"".join(
        _hmsg(b"fg.msg.u1.app.t%d" % (i % 7), 9, b"$JS.ACK.FG.c.1.%d.%d.1.0" % (i, i), HEADERS, b"%d" % i * 30)
        for i in range(500)
    )
    third = len(stream) // 3
    stock, ours = await _both([stream[:third], stream[third : 2 * third], stream[2 * third :]])
    assert ours == stock and len(stock[0]) == 500
    assert counts == [0, 500]  # all of them through _dispatch_fast


async def test_acknowledgements_as_the_server_writes_them_take_the_fast_path() -> None:
    # nats-server writes a message without a reply subject with two spaces: "MSG <subject> <sid>  <size>".
    acks = [b'{"stream":"FG", "seq":%d}' % i for i in range(1, 301)]
    stream = b"".join(
        b"MSG _INBOX.abc.%d 1  %d\r\n%s\r\n" % (i, len(ack), ack)
        + _hmsg(b"fg.msg.u1.app.t", 3, b"$JS.ACK.FG.c.1.%d.%d.1.0" % (i, i), HEADERS, b"x" * 100)
        for i, ack in enumerate(acks, 1)
    )
    stock, ours = await _both([stream[:5000], stream[5000:]])
    assert ours == stock and len(stock[0]) == 600
    assert counts == [0, 600]


@pytest.mark.parametrize(
    "bad",
    [
        b"MSG foo bar 5\r\nhello\r\n",  # sid not a number: "malformed MSG"
        b"HMSG foo x 2 5\r\nhello\r\n",
        b"MSG foo 1\r\n",  # too few arguments: unknown protocol
        b"MSG foo 1 r x\r\n",
        b"MSG foo 1 5 \r\nhello\r\n",  # trailing space
        b"NOPE\r\n",
        b"\r\n",
        b"msg foo 1 5\r\nhello\r\n",
    ],
)
async def test_malformed_lines_fail_alike(bad: bytes) -> None:
    stock, ours = await _both([b"PING\r\nMSG a 1 1\r\nx\r\n" + bad + b"PONG\r\n"])
    assert ours == stock
    assert stock[2] is ProtocolError  # after the messages before it


async def test_an_oversized_partial_line_is_not_an_error_yet() -> None:
    big = b"MSG " + b"s" * MAX_CONTROL_LINE_SIZE
    stock, ours = await _both([b"PING\r\n" + big])
    assert ours == stock and stock[2] is type(None)
    stock, ours = await _both([b"PING\r\n" + big, b" 1 0\r\n\r\n"])
    assert ours == stock and stock[0][-1][1] == b"s" * MAX_CONTROL_LINE_SIZE


async def test_a_reset_during_a_callback_stops_parsing_the_old_buffer() -> None:
    stock, ours = await _both([STREAM], reset_on=b"foo.bar")
    assert ours == stock
    assert stock[0] == [("msg", b"foo.bar", 1, b"", b"hello", None)]
    assert stock[1][0] == b""


# -- the fast path on a real connection -------------------------------------------------------------


class _Seen:
    """Deliveries of one subscription, and an event once ``want`` of them arrived."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.items: list[Delivery] = []
        self.done = asyncio.Event()

    def __call__(self, delivery: Delivery) -> None:
        self.items.append(delivery)
        if len(self.items) >= self.want:
            self.done.set()


def _count_fast(client: AckClient) -> list[int]:
    """Count the messages ``_dispatch_fast`` takes on ``client`` (accepted, declined)."""
    counts = [0, 0]
    inner = client._dispatch_fast

    def spy(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> bool:
        taken = inner(sid, subject, reply, data, headers)
        counts[0 if taken else 1] += 1
        return taken

    client._dispatch_fast = spy  # type: ignore[method-assign]
    return counts


async def _publish(bus: Bus, count: int, body: bytes, qos: int = 1) -> list[int]:
    payload, headers = Payload(body, Kind.BINARY), {"Fg-QoS": str(qos)}
    futures = [
        asyncio.create_task(bus.publish(f"fg.msg.u1.app.t.{i % 3}", payload, headers=headers)) for i in range(count)
    ]
    return [ack.seq for ack in await asyncio.gather(*futures)]


@pytest.fixture
async def bus(make_nats: Callable[[], NatsServer]) -> AsyncIterator[Bus]:
    server = make_nats()
    bus = Bus(Settings())
    await bus.connect([server.url], attempts_timeout=10)
    yield bus
    await bus.close()


def _client(bus: Bus) -> AckClient:
    assert isinstance(bus._nc, AckClient)
    return bus._nc


async def test_ordered_consumer_messages_come_through_the_fast_path_in_order(bus: Bus) -> None:
    seqs = await _publish(bus, 300, b"m" * 100, qos=0)
    counts = _count_fast(_client(bus))
    seen = _Seen(len(seqs))
    sub = await bus.subscribe("fg.msg.u1.app.>", seen, start_seq=seqs[0])
    try:
        async with asyncio.timeout(10):
            await seen.done.wait()
        assert [d.seq for d in seen.items] == seqs and sub.last_seq == seqs[-1]
        first = seen.items[0]
        assert (first.namespace.user_id, first.topic, first.payload.kind, first.qos) == ("u1", "t/0", Kind.BINARY, 0)
        assert counts[0] >= len(seqs) - 5  # a few may reach nats-py's queue before the consumer is ours
    finally:
        await sub.stop()


async def test_a_sequence_gap_is_left_to_nats_py_which_recreates_the_consumer(bus: Bus) -> None:
    seqs = await _publish(bus, 50, b"first")
    seen = _Seen(len(seqs))
    sub = await bus.subscribe("fg.msg.u1.app.>", seen, start_seq=seqs[0])
    try:
        async with asyncio.timeout(10):
            await seen.done.wait()
        assert sub._sub is not None
        inner = sub._sub._sub
        sid, jsi = inner._id, inner._jsi
        assert jsi is not None
        jsi._dseq += 3  # as if three deliveries had been lost
        seen.want = 2 * len(seqs)
        seen.done.clear()
        more = await _publish(bus, 50, b"second")
        async with asyncio.timeout(10):
            await seen.done.wait()
        assert inner._id != sid  # reset to a new consumer, from the last stream sequence seen
        assert [d.seq for d in seen.items] == seqs + more
    finally:
        await sub.stop()


async def test_flow_control_and_heartbeats_go_through_nats_py(bus: Bus) -> None:
    client = _client(bus)
    seqs = await _publish(bus, 6000, b"f" * 1000)  # ~6 MB: more than a flow control window
    counts = _count_fast(client)
    statuses: list[bytes] = []
    heartbeats = asyncio.Event()  # set at the second idle heartbeat
    inner_process = client._process_msg

    async def spy(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if headers and headers[8:9] == b" ":
            statuses.append(headers.split(b"\r\n", 1)[0][13:])
            if statuses.count(b"Idle Heartbeat") >= 2:
                heartbeats.set()
        await inner_process(sid, subject, reply, data, headers)

    client._process_msg = spy  # type: ignore[method-assign]
    seen = _Seen(len(seqs))
    stalled = [False]

    def slow_start(delivery: Delivery) -> None:
        if not stalled[0]:
            stalled[0] = True
            time.sleep(0.5)  # the behaviour under test: the reader stalls, the server runs into its flow control window
        seen(delivery)

    sub = await bus.subscribe("fg.msg.u1.app.>", slow_start, start_seq=seqs[0])
    try:
        async with asyncio.timeout(30):
            await seen.done.wait()
        assert [d.seq for d in seen.items] == seqs
        assert sub._sub is not None
        sid = sub._sub._sub._id
        assert b"FlowControl Request" in statuses
        async with asyncio.timeout(10):  # two idle heartbeats: the tracked sequences match the server's
            await heartbeats.wait()
        assert b"Idle Heartbeat" in statuses
        assert sub._sub._sub._id == sid  # no reset: nothing was missed, and nats-py knows it
        assert counts[0] >= len(seqs) - 5
        seen.want += 1
        seen.done.clear()
        (last,) = await _publish(bus, 1, b"after")
        async with asyncio.timeout(10):
            await seen.done.wait()
        assert seen.items[-1].seq == last
    finally:
        await sub.stop()


async def test_core_subscription_messages_come_through_the_fast_path_as_nats_py_would_deliver_them(
    bus: Bus,
) -> None:
    """What another NATS client publishes reaches a core subscription raw: the same deliveries as nats-py's
    ``Msg`` path gives (with and without headers, a reply subject or none), and nats-py's counters move."""
    client = _client(bus)
    counts = _count_fast(client)
    raw_seen, msg_seen = _Seen(4), _Seen(4)
    sub = await bus.subscribe_core("fg.msg.u1.app.>", raw_seen)
    assert client.connected_url is not None
    other = await nats.connect(client.connected_url.geturl())
    try:
        messages = [
            ("fg.msg.u1.app.a", b'{"x": 1}', {"Fg-Type": "json", "Fg-QoS": "1"}, ""),
            ("fg.msg.u1.app.b.c", b"\xff\x00", {"Fg-QoS": "0"}, "_INBOX.elsewhere.7"),
            ("fg.msg.u1.app.d", b"plain", None, ""),
            ("fg.msg.u1.app.%25", b"", {"Fg-Type": "text", "Fg-QoS": "2"}, ""),
        ]
        before = client.stats["in_msgs"]
        for subject, body, headers, reply in messages:
            await other.publish(subject, body, reply=reply, headers=headers)
        await other.flush()
        async with asyncio.timeout(10):
            await raw_seen.done.wait()
        assert counts[0] >= 3  # the empty body with headers goes through nats-py (it could be a status)
        assert client.stats["in_msgs"] - before == 4
        for subject, body, headers, reply in messages:  # nats-py's own path, for comparison
            msg_seen(_delivery_of(Msg(client, subject=subject, reply=reply, data=body, headers=headers), 0, 0))
        got = [(d.seq, d.namespace, d.topic, d.payload.body, d.payload.kind, d.qos) for d in raw_seen.items]
        want = [(d.seq, d.namespace, d.topic, d.payload.body, d.payload.kind, d.qos) for d in msg_seen.items]
        assert all(d.stored_ns > 0 for d in raw_seen.items)  # arrival time
        assert got == want
        assert [d.topic for d in raw_seen.items] == ["a", "b/c", "d", "%"]
    finally:
        await other.close()
        await sub.stop()
