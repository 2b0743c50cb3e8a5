"""Asyncio MQTT 3.1.1 load client on Flow-Gate's own codec, and the measured scenarios.

This module owns the client side of ``bench/mqtt_throughput.py``: a lean
``asyncio.Protocol`` connection (``protocols.mqtt.codec`` for the bytes), the
end-to-end and fan-out scenarios, and their statistics (rate, latency
percentiles, the broker's peak RSS and CPU). It knows nothing about how a
broker is started; it is given a ``Target`` (host, port, credentials, pids).

Method: closed loop. One publisher keeps at most ``window`` messages ahead of
the subscribers (and, at QoS 1, at most ``ack_window`` unacknowledged by the
broker); every payload starts with the send time, so each delivery yields a
latency on the same clock. Under that saturating load the latency is mostly
queueing (about window / rate), so one more scenario paces QoS 1 at 5,000
messages/s, a load both brokers sustain, for latency without saturation. A barrier of probe messages before the measurement
makes sure every subscription is live, so nothing is lost to subscription
propagation. A broker that stops delivering for ``stall_timeout`` seconds ends
the run and the missing deliveries are reported as lost.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import psutil

from protocols.mqtt.codec import Decoder, MQTTProtocolError, encode, encode_publish
from protocols.mqtt.codec5 import ClientDecoder, encode5, encode_publish5
from protocols.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
)

_HEAD = struct.Struct(">qI")  # send time (perf_counter_ns, 0 for probes), sequence number


@dataclass(frozen=True, slots=True)
class Target:
    """A broker to measure: where it listens, how to log in, which processes are the broker."""

    name: str
    host: str
    port: int
    username: str | None = None
    password: bytes | None = None
    pids: tuple[int, ...] = ()  # broker processes whose RSS and CPU are reported (first = the broker itself)
    tls: ssl.SSLContext | None = None  # connect over TLS with this client context
    protocol: int = 4  # MQTT protocol level: 4 (3.1.1) or 5 (5.0)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    qos: int
    subscribers: int
    messages: int
    window: int  # messages the publisher may be ahead of the (average) subscriber
    ack_window: int = 1000  # QoS > 0: publishes the broker has not yet acknowledged
    batch: int = 200
    payload_size: int = 100
    stall_timeout: float = 10.0
    rate: float = 0.0  # > 0: open loop, paced at this many messages/s (for latency at a moderate load)
    shared: bool = False  # the subscribers are one shared subscription group ($share/bench/...): one copy each


@dataclass(slots=True)
class Result:
    target: str
    scenario: str
    qos: int
    subscribers: int
    published: int
    deliveries: int
    seconds: float
    lost: int
    out_of_order: int  # deliveries out of sequence at their subscriber: duplicates, gaps, reordering
    stalled: bool  # the broker stopped reading or delivering for stall_timeout: the rate is not meaningful
    p50_ms: float
    p99_ms: float
    broker_rss_mb: float  # peak during the run, the broker process itself
    other_rss_mb: float  # peak of the other processes (e.g. nats-server behind the gateway)
    broker_cpu: float  # % of one core, the broker process itself
    other_cpu: float  # % of one core, the other processes (nats-server)
    tool_cpu: float  # % of one core, this load tool

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


class BrokerRefused(Exception):
    """CONNACK with a non-zero return code, or SUBACK 0x80."""


class Connection(asyncio.Protocol):
    """One MQTT client connection; counts deliveries and acknowledgements, answers QoS 1/2 handshakes."""

    def __init__(self, progress: asyncio.Event, protocol: int = 4) -> None:
        self.decoder: Decoder = ClientDecoder(1 << 24) if protocol == 5 else Decoder(1 << 24, server_side=False)
        self.encode = encode5 if protocol == 5 else encode
        self.encode_publish = encode_publish5 if protocol == 5 else encode_publish
        self.transport: asyncio.Transport | None = None
        self.progress = progress
        self.received = 0  # measured PUBLISH deliveries
        self.acked = 0  # PUBACK/PUBCOMP for our publishes
        self.latencies: list[int] = []
        self.probe_seq = -1  # sequence number of the last probe seen
        self.next_seq = 0  # the measured messages' next expected sequence number
        self.out_of_order = 0  # deliveries that were not the expected next one (loss, duplicate, reordering)
        self.error: BaseException | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._control: asyncio.Queue[Packet] = asyncio.Queue()
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        now = time.perf_counter_ns()
        replies: list[bytes] = []
        received = 0
        unpack = _HEAD.unpack_from
        latencies = self.latencies
        try:
            while (packet := decoder.next_packet()) is not None:
                kind = type(packet)
                if kind is Publish:
                    assert isinstance(packet, Publish)
                    sent, seq = unpack(packet.payload)
                    if sent:
                        received += 1
                        latencies.append(now - sent)
                        if seq != self.next_seq:  # one publisher, one topic: in order [MQTT-4.6.0-5]
                            self.out_of_order += 1
                        self.next_seq = seq + 1
                    else:
                        self.probe_seq = seq
                    if packet.qos == 1:
                        assert packet.packet_id is not None
                        replies.append(encode(PubAck(packet.packet_id)))  # the same bytes in MQTT 5
                    elif packet.qos == 2:
                        assert packet.packet_id is not None
                        replies.append(encode(PubRec(packet.packet_id)))
                elif kind is PubAck or kind is PubComp:
                    self.acked += 1
                elif kind is PubRec:
                    assert isinstance(packet, PubRec)
                    replies.append(encode(PubRel(packet.packet_id)))
                elif kind is PubRel:
                    assert isinstance(packet, PubRel)
                    replies.append(encode(PubComp(packet.packet_id)))
                else:
                    self._control.put_nowait(packet)
        except MQTTProtocolError as exc:
            self.error = exc
            if self.transport is not None:
                self.transport.abort()
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))
        self.received += received
        self.progress.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = exc or ConnectionResetError("connection closed by the broker")
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()
        self.progress.set()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    # -- client API ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"connection closed: {self.error!r}")
        self.transport.write(data)

    async def drain(self, timeout: float) -> bool:
        """Wait while the transport's write buffer is full; False if it stayed full for ``timeout`` seconds."""
        if self._paused:
            self._resumed = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._resumed, timeout)
            except TimeoutError:
                return False
        if self.closed.done():
            raise ConnectionError(f"connection closed: {self.error!r}")
        return True

    async def expect(self, kind: type, timeout: float = 15.0) -> Packet:
        """The next control packet (CONNACK, SUBACK, ...), which must be of ``kind``."""
        get = asyncio.ensure_future(self._control.get())
        waiters: set[asyncio.Future[Any]] = {get, self.closed}
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            raise ConnectionError(f"no {kind.__name__} within {timeout}s: {self.error!r}")
        packet = get.result()
        if not isinstance(packet, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {packet!r}")
        return packet

    async def subscribe(self, topic: str, qos: int, packet_id: int = 1) -> None:
        self.write(self.encode(Subscribe(packet_id, ((topic, qos),))))
        ack = await self.expect(SubAck)
        assert isinstance(ack, SubAck)
        if ack.return_codes[0] >= 0x80:
            raise BrokerRefused(f"SUBACK 0x{ack.return_codes[0]:02x} for {topic!r}")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(Disconnect()))
            self.transport.close()


async def connect(target: Target, client_id: str, progress: asyncio.Event, *, clean: bool = True) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: Connection(progress, target.protocol), target.host, target.port, ssl=target.tls
    )
    level = target.protocol
    conn.write(conn.encode(Connect(client_id, clean, 120, target.username, target.password, protocol_level=level)))
    ack = await conn.expect(ConnAck)
    assert isinstance(ack, ConnAck)
    if ack.return_code:
        conn.close()
        raise BrokerRefused(f"{target.name}: CONNACK {ack.return_code}")
    return conn


def _percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index] / 1e6


class _Monitor:
    """Samples the broker processes' RSS (peak) and CPU time while a scenario runs."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.me = psutil.Process(os.getpid())
        self.peaks = [0] * len(self.procs)
        self._task: asyncio.Task[None] | None = None
        self._cpu0: list[float] = []
        self._my_cpu0 = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def _sample(self) -> None:
        for i, proc in enumerate(self.procs):
            self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._cpu0 = [self._cpu(p) for p in self.procs]
        self._my_cpu0 = self._cpu(self.me)
        self._task = asyncio.create_task(self._run())

    async def stop(self, seconds: float) -> tuple[float, float, float, float, float]:
        """(broker RSS MB, other RSS MB, broker CPU %, other CPU %, tool CPU %)."""
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._sample()
        cpu = [self._cpu(p) - c0 for p, c0 in zip(self.procs, self._cpu0, strict=True)]
        mine = self._cpu(self.me) - self._my_cpu0
        broker_rss = self.peaks[0] / 2**20 if self.peaks else float("nan")
        other_rss = sum(self.peaks[1:]) / 2**20
        scale = 100 / seconds if seconds else 0.0
        broker_cpu = cpu[0] * scale if cpu else float("nan")
        return broker_rss, other_rss, broker_cpu, sum(cpu[1:]) * scale, mine * scale


async def _barrier(
    publisher: Connection, subscribers: list[Connection], topic: str, qos: int, padding: bytes, shared: bool = False
) -> None:
    """Publish probes until every subscriber has seen the latest one: all subscriptions are live and drained
    (a shared group: until one member has, as each message goes to one member)."""
    deadline = time.monotonic() + 30
    seq = 0
    progress = publisher.progress
    while True:
        seq += 1
        publisher.write(
            publisher.encode(Publish(topic, _HEAD.pack(0, seq) + padding, qos, packet_id=60000 + seq % 5000))
        )
        wait_until = time.monotonic() + 0.25
        while (all if shared else any)(s.probe_seq != seq for s in subscribers):
            remaining = wait_until - time.monotonic()
            if remaining <= 0:
                break
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), remaining)
            except TimeoutError:
                break
        else:
            return
        if time.monotonic() > deadline:
            missing = sum(s.probe_seq < 0 for s in subscribers)
            raise TimeoutError(f"{missing} of {len(subscribers)} subscribers never received a probe")


async def run_scenario(target: Target, scenario: Scenario) -> Result:
    tag = secrets.token_hex(4)
    topic = f"bench/{scenario.name}/{tag}"
    progress = asyncio.Event()
    subscribers: list[Connection] = []
    publisher: Connection | None = None
    try:
        for start in range(0, scenario.subscribers, 25):  # connect in small groups, like devices coming online
            group = range(start, min(scenario.subscribers, start + 25))
            subscribers += await asyncio.gather(*(connect(target, f"bs-{tag}-{i}", progress) for i in group))
        name = f"$share/bench/{topic}" if scenario.shared else topic
        await asyncio.gather(*(s.subscribe(name, scenario.qos) for s in subscribers))
        publisher = await connect(target, f"bp-{tag}", progress)
        padding = b"\x5a" * (scenario.payload_size - _HEAD.size)
        await _barrier(publisher, subscribers, topic, scenario.qos, padding, scenario.shared)
        await asyncio.sleep(0.2)  # let the probes' acknowledgements settle before counting
        for s in subscribers:
            s.received = 0
            s.latencies = []
            s.next_seq = s.out_of_order = 0
        publisher.acked = 0
        return await _measure(target, scenario, topic, publisher, subscribers, padding)
    finally:
        for conn in [*subscribers, *([publisher] if publisher else [])]:
            conn.close()


async def _measure(
    target: Target, scenario: Scenario, topic: str, publisher: Connection, subscribers: list[Connection], padding: bytes
) -> Result:
    qos, total = scenario.qos, scenario.messages
    n_subs = 1 if scenario.shared else len(subscribers)  # copies of each message
    progress = publisher.progress
    monitor = _Monitor(target.pids)
    monitor.start()
    topic_bytes = topic.encode()
    encode_one = publisher.encode_publish
    sent = 0
    packet_id = 0
    stalled = False
    started = time.perf_counter()

    def delivered() -> int:
        return sum(s.received for s in subscribers)

    async def wait_progress() -> bool:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), scenario.stall_timeout)
        except TimeoutError:
            return False
        return True

    while sent < total:
        room = scenario.window - (sent - delivered() // n_subs)
        if qos:
            room = min(room, scenario.ack_window - (sent - publisher.acked))
        if room <= 0:
            if not await wait_progress():
                stalled = True
                break
            continue
        count = min(room, scenario.batch, total - sent)
        if scenario.rate:  # paced: the next batch is due when the schedule says so
            due = started + sent / scenario.rate - time.perf_counter()
            if due > 0:
                await asyncio.sleep(due)
        now = time.perf_counter_ns()
        if qos:
            parts = []
            for seq in range(sent, sent + count):
                packet_id = packet_id % 50000 + 1  # 60000.. are the probes' ids
                parts.append(encode_one(topic_bytes, _HEAD.pack(now, seq) + padding, qos, packet_id=packet_id))
            publisher.write(b"".join(parts))
        else:
            publisher.write(
                b"".join(encode_one(topic_bytes, _HEAD.pack(now, seq) + padding) for seq in range(sent, sent + count))
            )
        sent += count
        if not await publisher.drain(scenario.stall_timeout):  # the broker stopped reading
            stalled = True
            break
        await asyncio.sleep(0)  # let the subscribers' reads run between batches
    while not stalled and (delivered() < sent * n_subs or (qos and publisher.acked < sent)):
        if not await wait_progress():
            stalled = True
    seconds = time.perf_counter() - started
    broker_rss, other_rss, broker_cpu, other_cpu, tool_cpu = await monitor.stop(seconds)
    deliveries = delivered()
    latencies = sorted(x for s in subscribers for x in s.latencies)
    dropped = [s for s in [publisher, *subscribers] if s.closed.done()]
    if dropped:
        raise ConnectionError(f"{target.name}: {len(dropped)} connections closed by the broker: {dropped[0].error!r}")
    return Result(
        target=target.name,
        scenario=scenario.name,
        qos=qos,
        subscribers=len(subscribers),
        published=sent,
        deliveries=deliveries,
        seconds=seconds,
        lost=sent * n_subs - deliveries,
        out_of_order=0 if scenario.shared else sum(s.out_of_order for s in subscribers),
        stalled=stalled,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        broker_rss_mb=broker_rss,
        other_rss_mb=other_rss,
        broker_cpu=broker_cpu,
        other_cpu=other_cpu,
        tool_cpu=tool_cpu,
    )


@dataclass(frozen=True, slots=True)
class Suite:
    """The standard scenarios; ``scale`` multiplies the message counts."""

    scale: float = 1.0
    scenarios: tuple[Scenario, ...] = field(default=())

    def build(self) -> tuple[Scenario, ...]:
        if self.scenarios:
            return self.scenarios

        def n(count: int) -> int:
            return max(1000, int(count * self.scale))

        return (
            Scenario("qos0", qos=0, subscribers=1, messages=n(200_000), window=2000),
            Scenario("qos1", qos=1, subscribers=1, messages=n(100_000), window=2000, ack_window=1000),
            Scenario("fanout", qos=0, subscribers=100, messages=n(5_000), window=300, batch=50),
            Scenario("qos1-5k", qos=1, subscribers=1, messages=n(25_000), window=2000, batch=50, rate=5000),
            Scenario("shared10", qos=1, subscribers=10, messages=n(50_000), window=2000, ack_window=1000, shared=True),
        )
