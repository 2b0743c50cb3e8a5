"""Micro-benchmark: Flow-Gate's MQTT codec against amqtt 0.12's packet classes, same run, ratio printed.

PUBLISH packets (topic ``u1_app_sensors/temperature``, 100-byte payload) at QoS 0
and QoS 1:

- encode: ours ``encode(Publish(...))`` (building the frozen dataclass included);
  amqtt ``PublishPacket.build(...).to_bytes()``;
- encode_publish: ours without a packet object (the delivery hot path), same amqtt figure;
- decode: ours ``Decoder.feed`` of 64 KiB reads and ``next_packet()`` until empty;
  amqtt as its broker reads: ``MQTTFixedHeader.from_stream`` then
  ``PublishPacket.from_stream`` on an ``asyncio.StreamReader`` holding the same bytes.

    .venv/bin/python bench/mqtt_codec.py [--packets 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amqtt.adapters import StreamReaderAdapter  # noqa: E402
from amqtt.mqtt.packet import MQTTFixedHeader  # noqa: E402
from amqtt.mqtt.publish import PublishPacket  # noqa: E402

from protocols.mqtt.codec import Decoder, encode, encode_publish  # noqa: E402
from protocols.mqtt.packets import Publish  # noqa: E402

TOPIC = "u1_app_sensors/temperature"
PAYLOAD = bytes(range(100))


def ours_encode(n: int, qos: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        encode(Publish(TOPIC, PAYLOAD, qos, packet_id=(i & 0x7FFF) + 1 if qos else None))
    return n / (time.perf_counter() - start)


def ours_encode_publish(n: int, qos: int) -> float:
    topic = TOPIC.encode()
    start = time.perf_counter()
    for i in range(n):
        encode_publish(topic, PAYLOAD, qos, packet_id=(i & 0x7FFF) + 1 if qos else None)
    return n / (time.perf_counter() - start)


def amqtt_encode(n: int, qos: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        PublishPacket.build(TOPIC, PAYLOAD, (i & 0x7FFF) + 1 if qos else None, False, qos, False).to_bytes()
    return n / (time.perf_counter() - start)


def _stream(n: int, qos: int) -> bytes:
    return b"".join(encode(Publish(TOPIC, PAYLOAD, qos, packet_id=(i & 0x7FFF) + 1 if qos else None)) for i in range(n))


def ours_decode(n: int, qos: int) -> float:
    data = _stream(n, qos)
    reads = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    start = time.perf_counter()
    decoder = Decoder()
    count = 0
    for chunk in reads:
        decoder.feed(chunk)
        while decoder.next_packet() is not None:
            count += 1
    elapsed = time.perf_counter() - start
    assert count == n
    return n / elapsed


def amqtt_decode(n: int, qos: int) -> float:
    data = _stream(n, qos)

    async def run() -> float:
        reader = asyncio.StreamReader(limit=len(data) + 1)
        reader.feed_data(data)
        reader.feed_eof()
        adapter = StreamReaderAdapter(reader)
        start = time.perf_counter()
        for _ in range(n):
            header = await MQTTFixedHeader.from_stream(adapter)
            packet = await PublishPacket.from_stream(adapter, fixed_header=header)
            assert packet.qos == qos
        return n / (time.perf_counter() - start)

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MQTT codec micro-benchmark: ours vs amqtt")
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; the median is reported")
    args = parser.parse_args(argv)
    cases: list[tuple[str, Callable[[int, int], float], Callable[[int, int], float]]] = [
        ("encode", ours_encode, amqtt_encode),
        ("encode_publish", ours_encode_publish, amqtt_encode),
        ("decode", ours_decode, amqtt_decode),
    ]
    print(f"PUBLISH, {len(PAYLOAD)}-byte payload, {args.packets:,} packets, median of {args.repeat} alternating runs")
    print(f"{'':20} {'flow-gate':>14} {'amqtt 0.12':>14} {'ratio':>7}")
    for qos in (0, 1):
        for name, ours, theirs in cases:
            a: list[float] = []
            b: list[float] = []
            amqtt_n = max(1000, args.packets // 4)  # amqtt is several times slower; fewer packets, same rate
            for _ in range(args.repeat):
                a.append(ours(args.packets, qos))
                b.append(theirs(amqtt_n, qos))
            ra, rb = statistics.median(a), statistics.median(b)
            print(f"{f'{name} QoS {qos}':20} {ra:>12,.0f}/s {rb:>12,.0f}/s {ra / rb:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
