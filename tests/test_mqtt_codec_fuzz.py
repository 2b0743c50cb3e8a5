"""Property tests and a seeded mutation fuzzer for the MQTT 3.1.1 decoder (protocols/mqtt/codec.py).

- hypothesis: encode -> decode round trip for every packet type, in whole and in
  arbitrary chunks, and agreement with amqtt 0.12's packet classes both ways;
- a seeded mutation loop: valid packets mutated by bit flips, byte changes,
  truncation, splicing, insertion/deletion and remaining-length/inner-length
  tampering, plus pure random bytes, fed to ``Decoder`` whole or in random chunks.
  The only exception allowed out is ``MQTTProtocolError``; every packet that does
  come out must re-encode and decode to itself, and chunked feeding must give the
  same result as feeding the input at once.

The default run fuzzes FUZZ_INPUTS inputs (1,000,000 unless MQTT_FUZZ_INPUTS says otherwise).
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Coroutine
from typing import Any

from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload, ConnectVariableHeader
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.mqtt.codec import Decoder, MQTTProtocolError, encode
from protocols.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from tests.test_mqtt_codec import TABLE, amqtt_decode

FUZZ_INPUTS = int(os.environ.get("MQTT_FUZZ_INPUTS", "1000000"))

# -- strategies ---------------------------------------------------------------------------

_chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
topic_names = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00+#"), min_size=1, max_size=40
)
filters = st.text(_chars, max_size=40)
strings = st.text(_chars, max_size=30)
packet_ids = st.integers(1, 0xFFFF)
qos = st.integers(0, 2)
payloads = st.binary(max_size=300) | st.integers(0, 70_000).map(lambda n: b"\xa5" * n)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    level = draw(qos)
    if level == 0:
        return Publish(draw(topic_names), draw(payloads), 0, draw(st.booleans()))
    return Publish(draw(topic_names), draw(payloads), level, draw(st.booleans()), draw(st.booleans()), draw(packet_ids))


wills = st.builds(Will, topic_names, st.binary(max_size=100), qos, st.booleans())


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | strings)
    password = draw(st.none() | st.binary(max_size=100)) if username is not None else None
    return Connect(
        draw(strings),
        draw(st.booleans()),
        draw(st.integers(0, 0xFFFF)),
        username,
        password,
        draw(st.none() | wills),
        draw(st.sampled_from(["MQTT", "MQIsdp"])),
        draw(st.sampled_from([4, 3])),
    )


client_packets = st.one_of(
    connects(),
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    st.builds(Subscribe, packet_ids, st.lists(st.tuples(filters, qos), min_size=1, max_size=5).map(tuple)),
    st.builds(Unsubscribe, packet_ids, st.lists(filters, min_size=1, max_size=5).map(tuple)),
    st.just(PingReq()),
    st.just(Disconnect()),
)
server_packets = st.one_of(
    st.builds(ConnAck, st.booleans(), st.just(0)),
    st.builds(ConnAck, st.just(False), st.integers(1, 5)),
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    st.builds(SubAck, packet_ids, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=8).map(tuple)),
    st.builds(UnsubAck, packet_ids),
    st.just(PingResp()),
)


def decode_stream(chunks: list[bytes], server_side: bool = True, max_packet_size: int = 1 << 20) -> list[Packet]:
    decoder = Decoder(max_packet_size, server_side=server_side)
    out: list[Packet] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (packet := decoder.next_packet()) is not None:
            out.append(packet)
    assert decoder.buffered == 0
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# -- round trips --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_packets)
def test_client_packets_round_trip(packet: Packet) -> None:
    assert decode_stream([encode(packet)]) == [packet]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server_packets)
def test_server_packets_round_trip(packet: Packet) -> None:
    assert decode_stream([encode(packet)], server_side=False) == [packet]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(client_packets, min_size=1, max_size=8), st.lists(st.integers(0, 1 << 20), max_size=12))
def test_streams_decode_the_same_in_any_chunking(packets: list[Packet], points: list[int]) -> None:
    stream = b"".join(map(encode, packets))
    assert decode_stream(cut(stream, points)) == packets


# -- agreement with amqtt -----------------------------------------------------------------


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (amqtt reading from a BufferReader) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine suspended")


def to_amqtt(packet: Packet) -> Any:
    match packet:
        case Connect():
            will = packet.will
            flags = (0x02 if packet.clean_session else 0) | (0x80 if packet.username is not None else 0)
            flags |= 0x40 if packet.password is not None else 0
            if will is not None:
                flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
            header = ConnectVariableHeader(flags, packet.keepalive, packet.protocol_name, packet.protocol_level)
            body = ConnectPayload(
                packet.client_id,
                will.topic if will else None,
                will.payload if will else None,
                packet.username,
                packet.password.decode() if packet.password is not None else None,
            )
            return ConnectPacket(variable_header=header, payload=body)
        case ConnAck():
            return ConnackPacket.build(int(packet.session_present), packet.return_code)
        case Publish():
            return PublishPacket.build(
                packet.topic, packet.payload, packet.packet_id, packet.dup, packet.qos, packet.retain
            )
        case Subscribe():
            return SubscribePacket.build(list(packet.topics), packet.packet_id)
        case SubAck():
            return SubackPacket.build(packet.packet_id, list(packet.return_codes))
        case Unsubscribe():
            return UnsubscribePacket.build(list(packet.topics), packet.packet_id)
        case PubAck() | PubRec() | PubRel() | PubComp() | UnsubAck():
            cls = {
                PubAck: PubackPacket,
                PubRec: PubrecPacket,
                PubRel: PubrelPacket,
                PubComp: PubcompPacket,
                UnsubAck: UnsubackPacket,
            }[type(packet)]
            return cls.build(packet.packet_id)
    return {PingReq: PingReqPacket, PingResp: PingRespPacket, Disconnect: DisconnectPacket}[type(packet)]()


def amqtt_comparable(packet: Packet) -> bool:
    """amqtt decodes passwords as UTF-8 text and replaces an empty client id with a random one."""
    if isinstance(packet, Connect):
        if packet.client_id == "":
            return False
        if packet.password is not None:
            try:
                packet.password.decode()
            except UnicodeDecodeError:
                return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(client_packets, server_packets))
def test_amqtt_encodes_what_we_encode_and_decodes_it_the_same(packet: Packet) -> None:
    if not amqtt_comparable(packet):
        return
    wire = encode(packet)
    assert to_amqtt(packet).to_bytes() == wire
    assert run_now(amqtt_decode(wire)) == packet


# -- the mutation fuzzer ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        digit, value = value & 0x7F, value >> 7
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _header_len(data: bytes) -> int:
    i = 1
    while i < len(data) and i < 5 and data[i] & 0x80:
        i += 1
    return min(i + 1, len(data))


def _corpus(rng: random.Random) -> list[bytes]:
    """The table's packets plus a few hundred random valid ones of every client-to-server type."""
    seeds = [row[2] for row in TABLE]

    def chance(p: float) -> bool:
        return rng.random() < p

    for _ in range(300):
        level = rng.randrange(3)
        topic = "/".join(rng.choice(["a", "b", "ü", "$SYS", "sensor", "x" * rng.randrange(1, 20)]) for _ in range(3))
        payload = rng.randbytes(rng.choice([0, 1, 10, 100, 130, 300]))
        packet_id = rng.randrange(1, 65536)
        seeds.append(encode(Publish(topic, payload, level, chance(0.5), level > 0 and chance(0.5), packet_id)))
        username = "Bearer" if chance(0.7) else None
        will = Will(topic, rng.randbytes(rng.randrange(20)), rng.randrange(3), chance(0.5)) if chance(0.5) else None
        password = rng.randbytes(rng.randrange(40)) if username and chance(0.8) else None
        seeds.append(
            encode(
                Connect(
                    rng.choice(["", "c", "dev-1", "ü" * 5]), chance(0.5), rng.randrange(65536), username, password, will
                )
            )
        )
        filters = tuple((f"{topic}/#", rng.randrange(3)) for _ in range(rng.randrange(1, 4)))
        seeds.append(encode(Subscribe(packet_id, filters)))
        seeds.append(encode(Unsubscribe(packet_id, tuple(f for f, _ in filters))))
        codes = tuple(rng.choice((0, 1, 2, 0x80)) for _ in range(rng.randrange(1, 5)))
        session_present = chance(0.5)
        server: list[Packet] = [
            SubAck(packet_id, codes),
            ConnAck(session_present, 0 if session_present else rng.randrange(6)),
        ]
        server += [rng.choice((PubAck, PubRec, PubRel, PubComp, UnsubAck))(packet_id), PingResp(), PingReq()]
        seeds.append(b"".join(map(encode, rng.sample(server, rng.randrange(1, 4)))))
    return seeds


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(11)
        n = len(buf)
        if op == 0 and n:  # bit flip
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random or boundary byte
            buf[rng.randrange(n)] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # truncate
            del buf[rng.randrange(n + 1) :]
        elif op == 3:  # splice with another packet
            other = rng.choice(corpus)
            buf = buf[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
        elif op == 4 and n:  # tamper with the remaining length: any value, 1 to 5 bytes, or bare continuation bytes
            hl = _header_len(bytes(buf))
            choice = rng.randrange(4)
            if choice == 0:
                field = _varint(max(0, n - hl + rng.randint(-3, 3)))
            elif choice == 1:
                field = _varint(
                    rng.choice((0, 1, 127, 128, 16383, 16384, 2_097_152, 268_435_455, rng.randrange(1 << 28)))
                )
            elif choice == 2:
                field = b"\xff" * rng.randrange(1, 6) + bytes([rng.randrange(128)])
            else:
                field = b"\x80" * rng.randrange(1, 5) + b"\x00"
            buf[1:hl] = field
        elif op == 5 and n > 3:  # tamper with an inner 16-bit length or packet id
            i = rng.randrange(1, n - 1)
            value = rng.choice((0, 1, 0xFFFF, buf[i] << 8 | buf[i + 1] ^ 1, rng.randrange(1 << 16)))
            buf[i : i + 2] = value.to_bytes(2, "big")
        elif op == 6 and n:  # new type and flags nibble
            buf[0] = rng.randrange(256)
        elif op == 7:  # insert random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 6))
        elif op == 8 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 6)]
        elif op == 9:  # followed by another valid or mutated packet
            buf += rng.choice(corpus)
        else:  # invalid UTF-8 / NUL / wildcard into a string position
            if n > 4:
                i = rng.randrange(2, n)
                buf[i:i] = rng.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"+", b"#", b"\xe2\x82"))
    return bytes(buf)


def _run(data: bytes, server_side: bool, chunks: list[bytes] | None) -> tuple[list[Packet], str | None]:
    decoder = Decoder(4096, server_side=server_side)
    out: list[Packet] = []
    try:
        for chunk in chunks if chunks is not None else (data,):
            decoder.feed(chunk)
            while (packet := decoder.next_packet()) is not None:
                out.append(packet)
    except MQTTProtocolError as exc:
        # Not the decoder's bug guard translating an IndexError/ValueError (those carry a __cause__).
        assert exc.__cause__ is None, exc.reason
        return out, exc.reason
    return out, None


def fuzz(count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    corpus = _corpus(rng)
    stats = {"inputs": 0, "errors": 0, "packets": 0, "chunked": 0}
    for i in range(count):
        kind = i % 20
        if kind == 0:
            data = rng.randbytes(rng.randrange(64))
        elif kind == 1:
            data = bytes([rng.randrange(256)]) + _varint(rng.randrange(64)) + rng.randbytes(rng.randrange(64))
        else:
            data = _mutate(rng, rng.choice(corpus), corpus)
        server_side = rng.random() < 0.7
        packets, error = _run(data, server_side, None)
        if kind == 3 or kind == 13:  # the same input in random chunks must give the same result
            points = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 6))]
            assert _run(data, server_side, cut(data, points)) == (packets, error), data.hex()
            stats["chunked"] += 1
        for packet in packets:  # whatever comes out is a valid packet: it re-encodes to itself
            assert _run(encode(packet), server_side, None) == ([packet], None), (data.hex(), packet)
        stats["inputs"] += 1
        stats["errors"] += error is not None
        stats["packets"] += len(packets)
    return stats


def test_a_million_mutated_and_random_inputs() -> None:
    stats = fuzz(FUZZ_INPUTS, seed=0x4D515454)
    assert stats["inputs"] == FUZZ_INPUTS
    # The fuzzer must exercise both outcomes: plenty of rejections and plenty of accepted packets.
    assert stats["errors"] > FUZZ_INPUTS // 10
    assert stats["packets"] > FUZZ_INPUTS // 10
