"""Byte tables for the MQTT 3.1.1 codec (protocols/mqtt/codec.py), cross-checked with amqtt 0.12.

Every packet type is encoded to exact bytes and decoded back to the exact packet;
amqtt's packet classes must produce the same bytes and decode ours to the same
fields. Every rejection rule is a row citing its normative statement of the
OASIS MQTT 3.1.1 specification. No event loop and no sockets, except that amqtt's
decoder is itself async.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload, ConnectVariableHeader
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
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

from gateway.errors import BadRequest, FlowGateError
from protocols.mqtt.codec import Decoder, MQTTProtocolError, PacketTooLarge, encode, encode_publish
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

C2S = "client->server"
S2C = "server->client"


def h(text: str) -> bytes:
    """Hex with spaces and '|' as separators allowed, for readable tables."""
    return bytes.fromhex(text.replace("|", " "))


def amqtt_connect(
    flags: int,
    keepalive: int,
    client_id: str,
    *,
    will: tuple[str, bytes] | None = None,
    username: str | None = None,
    password: str | None = None,
    name: str = "MQTT",
    level: int = 4,
) -> ConnectPacket:
    header = ConnectVariableHeader(flags, keepalive, name, level)
    payload = ConnectPayload(client_id, will[0] if will else None, will[1] if will else None, username, password)
    return ConnectPacket(variable_header=header, payload=payload)


# (id, packet, exact wire bytes, amqtt builder, direction)
TABLE: list[tuple[str, Packet, bytes, Callable[[], Any], str]] = [
    (
        "connect-minimal",
        Connect("", True, 0),
        h("10 0c | 00 04 4d 51 54 54 | 04 | 02 | 00 00 | 00 00"),
        lambda: amqtt_connect(0x02, 0, ""),
        C2S,
    ),
    (
        "connect-bearer-jwt",
        Connect("dev1", False, 60, "Bearer", b"eyJ.x.y"),
        h("10 21 | 00 04 4d515454 | 04 | c0 | 00 3c | 0004 64657631 | 0006 426561726572 | 0007 65794a2e782e79"),
        lambda: amqtt_connect(0xC0, 60, "dev1", username="Bearer", password="eyJ.x.y"),
        C2S,
    ),
    (
        "connect-will-qos1-retain",
        Connect("c", True, 30, "u", b"p", Will("a/w", b"bye", 1, True)),
        h("10 1d | 0004 4d515454 | 04 | ee | 00 1e | 0001 63 | 0003 612f77 | 0003 627965 | 0001 75 | 0001 70"),
        lambda: amqtt_connect(0xEE, 30, "c", will=("a/w", b"bye"), username="u", password="p"),
        C2S,
    ),
    (
        "connect-will-qos2-only",
        Connect("c", False, 65535, will=Will("w", b"", 2, False)),
        h("10 12 | 0004 4d515454 | 04 | 14 | ff ff | 0001 63 | 0001 77 | 0000"),
        lambda: amqtt_connect(0x14, 65535, "c", will=("w", b"")),
        C2S,
    ),
    (
        "connect-mqisdp-level3",
        Connect("old", True, 10, protocol_name="MQIsdp", protocol_level=3),
        h("10 11 | 0006 4d5149736470 | 03 | 02 | 00 0a | 0003 6f6c64"),
        lambda: amqtt_connect(0x02, 10, "old", name="MQIsdp", level=3),
        C2S,
    ),
    ("connack-accepted", ConnAck(False, 0), h("20 02 00 00"), lambda: ConnackPacket.build(0, 0), S2C),
    ("connack-session-present", ConnAck(True, 0), h("20 02 01 00"), lambda: ConnackPacket.build(1, 0), S2C),
    ("connack-bad-protocol", ConnAck(False, 1), h("20 02 00 01"), lambda: ConnackPacket.build(0, 1), S2C),
    ("connack-not-authorised", ConnAck(False, 5), h("20 02 00 05"), lambda: ConnackPacket.build(0, 5), S2C),
    (
        "publish-qos0",
        Publish("a/b", b"hello"),
        h("30 0a | 0003 612f62 | 68656c6c6f"),
        lambda: PublishPacket.build("a/b", b"hello", None, False, 0, False),
        C2S,
    ),
    (
        "publish-qos0-retain-empty-payload",
        Publish("t", b"", retain=True),
        h("31 03 | 0001 74"),
        lambda: PublishPacket.build("t", b"", None, False, 0, True),
        C2S,
    ),
    (
        "publish-qos1-dup",
        Publish("a/b", b"hi", 1, dup=True, packet_id=5),
        h("3a 09 | 0003 612f62 | 0005 | 6869"),
        lambda: PublishPacket.build("a/b", b"hi", 5, True, 1, False),
        C2S,
    ),
    (
        "publish-qos2-retain-id-ffff",
        Publish("x", b"\x00\xff", 2, retain=True, packet_id=0xFFFF),
        h("35 07 | 0001 78 | ffff | 00ff"),
        lambda: PublishPacket.build("x", b"\x00\xff", 0xFFFF, False, 2, True),
        S2C,
    ),
    (
        "publish-utf8-topic",
        Publish("température/ü", b"1", 1, packet_id=1),
        h("32 14 | 000f 74656d70c3a9726174757265 2fc3bc | 0001 | 31"),
        lambda: PublishPacket.build("température/ü", b"1", 1, False, 1, False),
        C2S,
    ),
    (
        "publish-two-byte-length",
        Publish("t", b"x" * 200),
        h("30 cb 01 | 0001 74") + b"x" * 200,
        lambda: PublishPacket.build("t", b"x" * 200, None, False, 0, False),
        C2S,
    ),
    ("puback", PubAck(1), h("40 02 00 01"), lambda: PubackPacket.build(1), C2S),
    ("pubrec", PubRec(0x1234), h("50 02 12 34"), lambda: PubrecPacket.build(0x1234), C2S),
    ("pubrel", PubRel(0xFFFF), h("62 02 ff ff"), lambda: PubrelPacket.build(0xFFFF), C2S),
    ("pubcomp", PubComp(300), h("70 02 01 2c"), lambda: PubcompPacket.build(300), S2C),
    (
        "subscribe-one",
        Subscribe(10, (("a/#", 1),)),
        h("82 08 | 000a | 0003 612f23 | 01"),
        lambda: SubscribePacket.build([("a/#", 1)], 10),
        C2S,
    ),
    (
        "subscribe-three",
        Subscribe(1, (("+/t", 0), ("$SYS/#", 2), ("ü", 1))),
        h("82 16 | 0001 | 0003 2b2f74 00 | 0006 245359532f23 02 | 0002 c3bc 01"),
        lambda: SubscribePacket.build([("+/t", 0), ("$SYS/#", 2), ("ü", 1)], 1),
        C2S,
    ),
    ("suback-one", SubAck(10, (1,)), h("90 03 000a 01"), lambda: SubackPacket.build(10, [1]), S2C),
    (
        "suback-mixed-failure",
        SubAck(7, (0, 1, 2, 0x80)),
        h("90 06 0007 00 01 02 80"),
        lambda: SubackPacket.build(7, [0, 1, 2, 0x80]),
        S2C,
    ),
    (
        "unsubscribe-two",
        Unsubscribe(2, ("a/#", "b")),
        h("a2 0a | 0002 | 0003 612f23 | 0001 62"),
        lambda: UnsubscribePacket.build(["a/#", "b"], 2),
        C2S,
    ),
    ("unsuback", UnsubAck(2), h("b0 02 00 02"), lambda: UnsubackPacket.build(2), S2C),
    ("pingreq", PingReq(), h("c0 00"), PingReqPacket, C2S),
    ("pingresp", PingResp(), h("d0 00"), PingRespPacket, S2C),
    ("disconnect", Disconnect(), h("e0 00"), DisconnectPacket, C2S),
]
IDS = [row[0] for row in TABLE]

_AMQTT_CLASSES: dict[int, Any] = {
    1: ConnectPacket,
    2: ConnackPacket,
    3: PublishPacket,
    4: PubackPacket,
    5: PubrecPacket,
    6: PubrelPacket,
    7: PubcompPacket,
    8: SubscribePacket,
    9: SubackPacket,
    10: UnsubscribePacket,
    11: UnsubackPacket,
    12: PingReqPacket,
    13: PingRespPacket,
    14: DisconnectPacket,
}


async def amqtt_decode(data: bytes) -> Packet:
    """Decode ``data`` with amqtt's packet classes and map the result onto our dataclasses."""
    cls = _AMQTT_CLASSES[data[0] >> 4]
    p = await cls.from_stream(BufferReader(data))
    vh = p.variable_header
    if cls is ConnectPacket:
        pl = p.payload
        will = Will(pl.will_topic, bytes(pl.will_message), vh.will_qos, vh.will_retain_flag) if vh.will_flag else None
        password = pl.password.encode() if pl.password is not None else None
        client_id = "" if pl.client_id_is_random else pl.client_id
        return Connect(
            client_id, vh.clean_session_flag, vh.keep_alive, pl.username, password, will, vh.proto_name, vh.proto_level
        )
    if cls is ConnackPacket:
        return ConnAck(bool(vh.session_parent), vh.return_code)
    if cls is PublishPacket:
        return Publish(p.topic_name, bytes(p.data), p.qos, p.retain_flag, p.dup_flag, p.packet_id)
    if cls is SubscribePacket:
        return Subscribe(vh.packet_id, tuple((t, q) for t, q in p.payload.topics))
    if cls is SubackPacket:
        return SubAck(vh.packet_id, tuple(p.payload.return_codes))
    if cls is UnsubscribePacket:
        return Unsubscribe(vh.packet_id, tuple(p.payload.topics))
    simple: dict[Any, Callable[[], Packet]] = {
        PubackPacket: lambda: PubAck(vh.packet_id),
        PubrecPacket: lambda: PubRec(vh.packet_id),
        PubrelPacket: lambda: PubRel(vh.packet_id),
        PubcompPacket: lambda: PubComp(vh.packet_id),
        UnsubackPacket: lambda: UnsubAck(vh.packet_id),
        PingReqPacket: PingReq,
        PingRespPacket: PingResp,
        DisconnectPacket: Disconnect,
    }
    return simple[cls]()


def decode_all(data: bytes, direction: str = C2S, max_packet_size: int = 1024 * 1024) -> list[Packet]:
    decoder = Decoder(max_packet_size, server_side=direction == C2S)
    decoder.feed(data)
    packets = []
    while (packet := decoder.next_packet()) is not None:
        packets.append(packet)
    assert decoder.buffered == 0
    return packets


# -- the byte table ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "packet", "wire", "amqtt", "direction"), TABLE, ids=IDS)
def test_encode_gives_exact_bytes(name: str, packet: Packet, wire: bytes, amqtt: Any, direction: str) -> None:
    assert encode(packet) == wire


@pytest.mark.parametrize(("name", "packet", "wire", "amqtt", "direction"), TABLE, ids=IDS)
def test_decode_gives_exact_packet(name: str, packet: Packet, wire: bytes, amqtt: Any, direction: str) -> None:
    assert decode_all(wire, direction) == [packet]


@pytest.mark.parametrize(("name", "packet", "wire", "amqtt", "direction"), TABLE, ids=IDS)
def test_amqtt_encodes_the_same_bytes(name: str, packet: Packet, wire: bytes, amqtt: Any, direction: str) -> None:
    assert amqtt().to_bytes() == wire


@pytest.mark.parametrize(("name", "packet", "wire", "amqtt", "direction"), TABLE, ids=IDS)
async def test_amqtt_decodes_our_bytes_to_the_same_fields(
    name: str, packet: Packet, wire: bytes, amqtt: Any, direction: str
) -> None:
    assert await amqtt_decode(encode(packet)) == packet


def test_table_covers_all_fourteen_packet_types() -> None:
    assert {row[2][0] >> 4 for row in TABLE} == set(range(1, 15))


@pytest.mark.parametrize("length", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_remaining_length_boundaries_match_amqtt(length: int) -> None:
    """Variable length encoding [MQTT-2.2.3]: 1 to 4 bytes, the boundaries at 128, 16384, 2097152."""
    header_len = {0: 1, 127: 1, 128: 2, 16_383: 2, 16_384: 3, 2_097_151: 3, 2_097_152: 4}[length]
    if length == 0:
        packet: Packet = PingReq()
        wire = encode(packet)
        assert wire == MQTTFixedHeader(12, 0, 0).to_bytes()
    else:
        packet = Publish("t", b"p" * (length - 3))
        wire = encode(packet)
        assert wire[: 1 + header_len] == MQTTFixedHeader(3, 0, length).to_bytes()
        assert wire == PublishPacket.build("t", b"p" * (length - 3), None, False, 0, False).to_bytes()
    assert len(wire) == 1 + header_len + length
    assert decode_all(wire, max_packet_size=length) == [packet]


def test_all_rows_in_one_chunk_and_one_byte_at_a_time() -> None:
    for direction in (C2S, S2C):
        rows = [
            row
            for row in TABLE
            if row[4] == direction or isinstance(row[1], Publish | PubAck | PubRec | PubRel | PubComp)
        ]
        stream = b"".join(row[2] for row in rows)
        expected = [row[1] for row in rows]
        assert decode_all(stream, direction) == expected

        decoder = Decoder(server_side=direction == C2S)
        got: list[Packet] = []
        for i in range(len(stream)):
            decoder.feed(stream[i : i + 1])
            while (packet := decoder.next_packet()) is not None:
                got.append(packet)
        assert got == expected
        assert decoder.buffered == 0


def test_packets_split_across_chunks_at_every_offset() -> None:
    stream = encode(Publish("a/b", b"x" * 300, 1, packet_id=9)) + encode(PingReq()) + encode(Publish("c", b"y"))
    expected = [Publish("a/b", b"x" * 300, 1, packet_id=9), PingReq(), Publish("c", b"y")]
    for cut in range(len(stream) + 1):
        for cut2 in (cut, min(len(stream), cut + 2), len(stream)):
            decoder = Decoder()
            got: list[Packet] = []
            for chunk in (stream[:cut], stream[cut:cut2], stream[cut2:]):
                decoder.feed(chunk)
                while (packet := decoder.next_packet()) is not None:
                    got.append(packet)
            assert got == expected, (cut, cut2)


def test_feed_accepts_bytearray_and_memoryview_and_ignores_empty() -> None:
    wire = encode(Publish("a", b"1")) + encode(Publish("b", b"2"))
    decoder = Decoder()
    decoder.feed(b"")
    assert decoder.next_packet() is None
    decoder.feed(bytearray(wire[:3]))
    decoder.feed(memoryview(wire)[3:])
    assert decoder.next_packet() == Publish("a", b"1")
    assert decoder.next_packet() == Publish("b", b"2")
    assert decoder.next_packet() is None


def test_partial_packet_is_kept_until_complete() -> None:
    wire = encode(Subscribe(3, (("a/+", 2),)))
    decoder = Decoder()
    decoder.feed(wire[:-1])
    assert decoder.next_packet() is None
    assert decoder.buffered == len(wire) - 1
    decoder.feed(wire[-1:])
    assert decoder.next_packet() == Subscribe(3, (("a/+", 2),))
    assert decoder.buffered == 0


def test_large_packet_fed_in_small_chunks() -> None:
    packet = Publish("big", bytes(range(256)) * 2000, 2, packet_id=77)
    wire = encode(packet)
    decoder = Decoder()
    for i in range(0, len(wire), 1000):
        assert decoder.next_packet() is None
        decoder.feed(wire[i : i + 1000])
    assert decoder.next_packet() == packet
    assert decoder.next_packet() is None


# -- the size limit -----------------------------------------------------------------------


def test_size_limit_enforced_from_the_fixed_header_before_the_body() -> None:
    decoder = Decoder(max_packet_size=100)
    decoder.feed(h("30 e5 00"))  # PUBLISH, remaining length 101; no body sent at all
    with pytest.raises(PacketTooLarge) as info:
        decoder.next_packet()
    assert "101" in info.value.reason
    assert isinstance(info.value, MQTTProtocolError)


def test_size_limit_with_the_header_split_over_feeds() -> None:
    decoder = Decoder(max_packet_size=1000)
    for byte in h("30 ff ff ff 7f")[:-1]:  # 268,435,455: the largest remaining length
        decoder.feed(bytes([byte]))
        assert decoder.next_packet() is None
    decoder.feed(b"\x7f")
    with pytest.raises(PacketTooLarge):
        decoder.next_packet()


def test_packet_exactly_at_the_limit_is_accepted() -> None:
    packet = Publish("t", b"z" * 97)  # remaining length 2 + 1 + 97 = 100
    assert decode_all(encode(packet), max_packet_size=100) == [packet]
    with pytest.raises(PacketTooLarge):
        decode_all(encode(packet), max_packet_size=99)


def test_size_limit_applies_to_every_packet_type() -> None:
    wire = encode(Subscribe(1, (("a" * 200, 0),)))
    with pytest.raises(PacketTooLarge):
        decode_all(wire[:3], max_packet_size=64)


def test_the_error_belongs_to_the_gateway_hierarchy() -> None:
    assert issubclass(MQTTProtocolError, BadRequest) and issubclass(MQTTProtocolError, FlowGateError)
    assert issubclass(PacketTooLarge, MQTTProtocolError)
    assert PacketTooLarge.status == 413


# -- rejections ---------------------------------------------------------------------------

# (id, wire bytes, direction, text the reason must contain — the spec clause where there is one)
REJECT: list[tuple[str, bytes, str, str]] = [
    # packet types and direction [MQTT-2.2.1]
    ("type-0-reserved", h("00 00"), C2S, "reserved(0)"),
    ("type-15-reserved", h("f0 00"), C2S, "reserved(15)"),
    ("type-15-reserved-client", h("f0 00"), S2C, "reserved(15)"),
    ("connack-to-server", h("20 02 00 00"), C2S, "CONNACK"),
    ("suback-to-server", h("90 03 0001 00"), C2S, "SUBACK"),
    ("unsuback-to-server", h("b0 02 0001"), C2S, "UNSUBACK"),
    ("pingresp-to-server", h("d0 00"), C2S, "PINGRESP"),
    ("connect-to-client", encode(Connect("c", True, 0)), S2C, "CONNECT"),
    ("subscribe-to-client", encode(Subscribe(1, (("a", 0),))), S2C, "SUBSCRIBE"),
    ("unsubscribe-to-client", encode(Unsubscribe(1, ("a",))), S2C, "UNSUBSCRIBE"),
    ("pingreq-to-client", h("c0 00"), S2C, "PINGREQ"),
    ("disconnect-to-client", h("e0 00"), S2C, "DISCONNECT"),
    # reserved fixed-header flags [MQTT-2.2.2-1, 2.2.2-2]
    ("connect-flags", h("11") + encode(Connect("c", True, 0))[1:], C2S, "MQTT-2.2.2-2"),
    ("connack-flags", h("21 02 00 00"), S2C, "MQTT-2.2.2-2"),
    ("puback-flags", h("42 02 00 01"), C2S, "MQTT-2.2.2-2"),
    ("pubrec-flags", h("52 02 00 01"), C2S, "MQTT-2.2.2-2"),
    ("pubrel-flags-0", h("60 02 00 01"), C2S, "MQTT-2.2.2-2"),
    ("pubrel-flags-3", h("63 02 00 01"), C2S, "MQTT-2.2.2-2"),
    ("pubcomp-flags", h("78 02 00 01"), C2S, "MQTT-2.2.2-2"),
    ("subscribe-flags-0", h("80 06 0001 0001 61 00"), C2S, "MQTT-2.2.2-2"),
    ("subscribe-flags-a", h("8a 06 0001 0001 61 00"), C2S, "MQTT-2.2.2-2"),
    ("suback-flags", h("92 03 0001 00"), S2C, "MQTT-2.2.2-2"),
    ("unsubscribe-flags", h("a0 05 0001 0001 61"), C2S, "MQTT-2.2.2-2"),
    ("unsuback-flags", h("b1 02 0001"), S2C, "MQTT-2.2.2-2"),
    ("pingreq-flags", h("c1 00"), C2S, "MQTT-2.2.2-2"),
    ("pingresp-flags", h("d4 00"), S2C, "MQTT-2.2.2-2"),
    ("disconnect-flags", h("e8 00"), C2S, "MQTT-2.2.2-2"),
    # remaining length [MQTT-2.2.3]: at most four bytes
    ("remaining-length-5-bytes", h("30 ff ff ff ff 01"), C2S, "MQTT-2.2.3"),
    ("remaining-length-5-bytes-pingreq", h("c0 80 80 80 80 00"), C2S, "MQTT-2.2.3"),
    # PUBLISH
    ("publish-qos3", h("36 05 0001 61 0001"), C2S, "MQTT-3.3.1-4"),
    ("publish-qos3-dup-retain", h("3f 05 0001 61 0001"), S2C, "MQTT-3.3.1-4"),
    ("publish-dup-at-qos0", h("38 03 0001 61"), C2S, "MQTT-3.3.1-2"),
    ("publish-empty-topic", h("30 02 0000"), C2S, "MQTT-4.7.3-1"),
    ("publish-empty-topic-qos1", h("32 04 0000 0001"), C2S, "MQTT-4.7.3-1"),
    ("publish-plus-wildcard", h("30 07 0005 612f2b2f62"), C2S, "MQTT-3.3.2-2"),
    ("publish-hash-wildcard", h("30 05 0003 612f23"), C2S, "MQTT-3.3.2-2"),
    ("publish-lone-hash", h("30 03 0001 23"), S2C, "MQTT-3.3.2-2"),
    ("publish-topic-nul", h("30 05 0003 610062"), C2S, "MQTT-1.5.3-2"),
    ("publish-topic-invalid-utf8", h("30 04 0002 c328"), C2S, "MQTT-1.5.3-1"),
    ("publish-topic-overlong-utf8", h("30 04 0002 c0af"), C2S, "MQTT-1.5.3-1"),
    ("publish-topic-surrogate", h("30 05 0003 eda080"), C2S, "MQTT-1.5.3-1"),
    ("publish-topic-truncated-utf8", h("30 04 0002 e282"), C2S, "MQTT-1.5.3-1"),
    ("publish-topic-beyond-U10FFFF", h("30 06 0004 f4908080"), C2S, "MQTT-1.5.3-1"),
    ("publish-packet-id-0-qos1", h("32 05 0001 61 0000"), C2S, "MQTT-2.3.1-1"),
    ("publish-packet-id-0-qos2", h("34 05 0001 61 0000"), S2C, "MQTT-2.3.1-1"),
    ("publish-topic-length-past-end", h("30 04 0005 6162"), C2S, "past the remaining length"),
    ("publish-too-short-for-topic-length", h("30 01 00"), C2S, "too short"),
    ("publish-qos1-no-room-for-id", h("32 04 0001 61 00"), C2S, "packet identifier"),
    # packet identifiers [MQTT-2.3.1-1]
    ("puback-id-0", h("40 02 0000"), C2S, "MQTT-2.3.1-1"),
    ("pubrec-id-0", h("50 02 0000"), C2S, "MQTT-2.3.1-1"),
    ("pubrel-id-0", h("62 02 0000"), C2S, "MQTT-2.3.1-1"),
    ("pubcomp-id-0", h("70 02 0000"), S2C, "MQTT-2.3.1-1"),
    ("subscribe-id-0", h("82 06 0000 0001 61 00"), C2S, "MQTT-2.3.1-1"),
    ("suback-id-0", h("90 03 0000 00"), S2C, "MQTT-2.3.1-1"),
    ("unsubscribe-id-0", h("a2 05 0000 0001 61"), C2S, "MQTT-2.3.1-1"),
    ("unsuback-id-0", h("b0 02 0000"), S2C, "MQTT-2.3.1-1"),
    # lengths that disagree with the remaining length
    ("puback-length-3", h("40 03 0001 00"), C2S, "remaining length must be 2"),
    ("puback-length-1", h("40 01 01"), C2S, "remaining length must be 2"),
    ("pubrel-length-0", h("62 00"), C2S, "remaining length must be 2"),
    ("unsuback-length-3", h("b0 03 0001 00"), S2C, "remaining length must be 2"),
    ("pingreq-length-1", h("c0 01 00"), C2S, "remaining length must be 0"),
    ("pingresp-length-2", h("d0 02 0000"), S2C, "remaining length must be 0"),
    ("disconnect-length-1", h("e0 01 00"), C2S, "remaining length must be 0"),
    ("connack-length-3", h("20 03 00 00 00"), S2C, "remaining length must be 2"),
    # SUBSCRIBE [MQTT-3.8.3-3, 3.8.3-4]
    ("subscribe-no-topics", h("82 02 0001"), C2S, "MQTT-3.8.3-3"),
    ("subscribe-qos-3", h("82 06 0001 0001 61 03"), C2S, "MQTT-3.8.3-4"),
    ("subscribe-qos-reserved-bits", h("82 06 0001 0001 61 04"), C2S, "MQTT-3.8.3-4"),
    ("subscribe-qos-high-bit", h("82 06 0001 0001 61 81"), C2S, "MQTT-3.8.3-4"),
    ("subscribe-second-qos-bad", h("82 0a 0001 0001 61 00 0001 62 fc"), C2S, "MQTT-3.8.3-4"),
    ("subscribe-missing-qos", h("82 05 0001 0001 61"), C2S, "without requested QoS"),
    ("subscribe-filter-past-end", h("82 06 0001 0009 61 00"), C2S, "past the remaining length"),
    ("subscribe-dangling-length-byte", h("82 07 0001 0001 61 00 00"), C2S, "length field"),
    ("subscribe-filter-invalid-utf8", h("82 06 0001 0001 ff 00"), C2S, "MQTT-1.5.3-1"),
    ("subscribe-filter-nul", h("82 06 0001 0001 00 00"), C2S, "MQTT-1.5.3-2"),
    ("subscribe-too-short-for-id", h("82 01 00"), C2S, "packet identifier"),
    # UNSUBSCRIBE [MQTT-3.10.3-2]
    ("unsubscribe-no-topics", h("a2 02 0001"), C2S, "MQTT-3.10.3-2"),
    ("unsubscribe-filter-past-end", h("a2 05 0001 0002 61"), C2S, "past the remaining length"),
    ("unsubscribe-filter-invalid-utf8", h("a2 06 0001 0002 e282"), C2S, "MQTT-1.5.3-1"),
    ("unsubscribe-filter-nul", h("a2 07 0001 0003 61 00 62"), C2S, "MQTT-1.5.3-2"),
    # SUBACK [MQTT-3.9.3-2]
    ("suback-return-code-3", h("90 03 0001 03"), S2C, "MQTT-3.9.3-2"),
    ("suback-return-code-81", h("90 04 0001 00 81"), S2C, "MQTT-3.9.3-2"),
    ("suback-no-codes", h("90 02 0001"), S2C, "without return codes"),
    # CONNACK [MQTT-3.2.2, 3.2.3]
    ("connack-reserved-ack-flags", h("20 02 02 00"), S2C, "MQTT-3.2.2"),
    ("connack-return-code-6", h("20 02 00 06"), S2C, "reserved return code"),
    ("connack-session-present-on-refusal", h("20 02 01 05"), S2C, "MQTT-3.2.2-4"),
    # CONNECT flags [MQTT-3.1.2-3, 3.1.2-11, 3.1.2-13, 3.1.2-14, 3.1.2-15, 3.1.2-22]
    ("connect-reserved-flag", h("10 0d 0004 4d515454 04 03 0000 0001 63"), C2S, "MQTT-3.1.2-3"),
    ("connect-will-qos-without-will", h("10 0d 0004 4d515454 04 0a 0000 0001 63"), C2S, "MQTT-3.1.2-13"),
    ("connect-will-qos2-without-will", h("10 0d 0004 4d515454 04 12 0000 0001 63"), C2S, "MQTT-3.1.2-13"),
    ("connect-will-retain-without-will", h("10 0d 0004 4d515454 04 22 0000 0001 63"), C2S, "MQTT-3.1.2-15"),
    ("connect-will-qos-3", h("10 13 0004 4d515454 04 1e 0000 0001 63 0001 77 0001 78"), C2S, "MQTT-3.1.2-14"),
    ("connect-password-without-user", h("10 10 0004 4d515454 04 42 0000 0001 63 0001 70"), C2S, "MQTT-3.1.2-22"),
    # CONNECT payload strings and lengths
    ("connect-client-id-invalid-utf8", h("10 0d 0004 4d515454 04 02 0000 0001 ff"), C2S, "MQTT-1.5.3-1"),
    ("connect-client-id-nul", h("10 0d 0004 4d515454 04 02 0000 0001 00"), C2S, "MQTT-1.5.3-2"),
    ("connect-user-invalid-utf8", h("10 10 0004 4d515454 04 82 0000 0001 63 0001 c0"), C2S, "MQTT-1.5.3-1"),
    ("connect-will-topic-nul", h("10 13 0004 4d515454 04 06 0000 0001 63 0001 00 0001 78"), C2S, "MQTT-1.5.3-2"),
    ("connect-protocol-name-invalid-utf8", h("10 0d 0004 4d51ff54 04 02 0000 0001 63"), C2S, "MQTT-1.5.3-1"),
    ("connect-trailing-bytes", h("10 0e 0004 4d515454 04 02 0000 0001 63 00"), C2S, "left over"),
    ("connect-client-id-past-end", h("10 0d 0004 4d515454 04 02 0000 0005 63"), C2S, "past the remaining length"),
    ("connect-missing-client-id", h("10 0a 0004 4d515454 04 02 0000"), C2S, "length field"),
    ("connect-missing-password", h("10 10 0004 4d515454 04 c2 0000 0001 63 0001 75"), C2S, "password"),
    ("connect-missing-will-message", h("10 10 0004 4d515454 04 06 0000 0001 63 0001 77"), C2S, "will message"),
    ("connect-truncated-variable-header", h("10 08 0004 4d515454 04 02"), C2S, "truncated"),
    ("connect-protocol-name-past-end", h("10 04 0009 4d51"), C2S, "past the remaining length"),
]


@pytest.mark.parametrize(("name", "wire", "direction", "reason"), REJECT, ids=[r[0] for r in REJECT])
def test_rejected(name: str, wire: bytes, direction: str, reason: str) -> None:
    decoder = Decoder(server_side=direction == C2S)
    decoder.feed(wire)
    with pytest.raises(MQTTProtocolError) as info:
        decoder.next_packet()
    assert reason in info.value.reason
    # The decoder stays failed: later calls raise the same error, new input is discarded.
    decoder.feed(encode(PingReq()))
    with pytest.raises(MQTTProtocolError) as again:
        decoder.next_packet()
    assert again.value is info.value
    assert decoder.failed


@pytest.mark.parametrize(("name", "wire", "direction", "reason"), REJECT, ids=[r[0] for r in REJECT])
def test_rejected_after_a_valid_packet_and_byte_by_byte(name: str, wire: bytes, direction: str, reason: str) -> None:
    """The same bytes, behind a valid packet and fed one byte at a time: the valid packet comes out, then the error."""
    valid = encode(PubAck(1))
    decoder = Decoder(server_side=direction == C2S)
    got: list[Packet] = []
    with pytest.raises(MQTTProtocolError) as info:
        for byte in valid + wire:
            decoder.feed(bytes([byte]))
            while (packet := decoder.next_packet()) is not None:
                got.append(packet)
    assert got == [PubAck(1)]
    assert reason in info.value.reason


# -- accepted although unusual: the session layer decides ----------------------------------


def test_connect_of_another_protocol_level_still_decodes_for_connack_1() -> None:
    """[MQTT-3.1.2-2]: the server answers CONNACK 1 to an unsupported level, so it must see the level."""
    mqtt5 = h("10 10 0004 4d515454 05 02 003c 00 0003 616263")  # MQTT 5: property length 0 before the client id
    (packet,) = decode_all(mqtt5)
    assert isinstance(packet, Connect)
    assert (packet.protocol_name, packet.protocol_level, packet.keepalive, packet.clean_session) == (
        "MQTT",
        5,
        60,
        True,
    )


def test_connect_with_unknown_protocol_name_decodes() -> None:
    """[MQTT-3.1.2-1]: the session layer, not the codec, judges the protocol name."""
    (packet,) = decode_all(encode(Connect("c", True, 5, protocol_name="MQTX", protocol_level=4)))
    assert packet == Connect("c", True, 5, protocol_name="MQTX", protocol_level=4)


def test_client_id_characters_are_the_session_layers_business() -> None:
    """[MQTT-3.1.3-5] allows servers to accept any id; refusing one is CONNACK 2, not a protocol error."""
    packet = Connect("a/b#+ü" + "x" * 100, False, 0)
    assert decode_all(encode(packet)) == [packet]


def test_topic_filter_syntax_is_the_session_layers_business() -> None:
    """Bad filters get SUBACK 0x80 per filter (section 3.9.3); the codec only checks the encoding."""
    packet = Subscribe(4, (("a/#/b", 0), ("a+", 1), ("", 2)))
    assert decode_all(encode(packet)) == [packet]
    assert decode_all(encode(Unsubscribe(4, ("#/x", "")))) == [Unsubscribe(4, ("#/x", ""))]


def test_dollar_topics_spaces_and_binary_payloads_decode() -> None:
    packets = [Publish("$SYS/broker", b"\x00\x01"), Publish(" a / b ", bytes(range(256)), 1, packet_id=2)]
    assert decode_all(b"".join(map(encode, packets))) == packets


def test_non_minimal_remaining_length_is_accepted() -> None:
    """MQTT 3.1.1 does not require the shortest encoding; 0x80 0x00 is a valid zero."""
    assert decode_all(h("c0 80 00")) == [PingReq()]
    assert decode_all(h("30 84 80 00 0001 61 62")) == [Publish("a", b"b")]


def test_qos2_publish_with_dup_and_retain() -> None:
    assert decode_all(h("3d 05 0001 61 0102")) == [Publish("a", b"", 2, True, True, 0x0102)]


# -- the encoder ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        Publish("t", b"", 1),
        Publish("t", b"", 2, packet_id=0),
        Publish("t", b"", 1, packet_id=65536),
        Publish("t", b"", 3, packet_id=1),
        Publish("t" * 65536, b""),
        Publish("\ud800", b""),
        PubAck(0),
        PubRel(70000),
        Subscribe(1, ()),
        Subscribe(1, (("a", 3),)),
        Subscribe(0, (("a", 0),)),
        SubAck(1, ()),
        SubAck(1, (3,)),
        Unsubscribe(1, ()),
        UnsubAck(0),
        Connect("c", True, 0, password=b"p"),
        Connect("c", True, 70000),
        Connect("c", True, 0, will=Will("w", b"", 3, False)),
        Connect("c", True, 0, will=Will("w", b"x" * 65536, 0, False)),
        ConnAck(False, 256),
    ],
    ids=repr,
)
def test_encode_refuses_what_cannot_be_encoded(packet: Packet) -> None:
    with pytest.raises(ValueError):
        encode(packet)


def test_encode_refuses_non_packets() -> None:
    with pytest.raises(ValueError):
        encode("PINGREQ")  # type: ignore[arg-type]


def test_encode_qos0_ignores_dup_and_packet_id() -> None:
    """DUP must be 0 at QoS 0 [MQTT-3.3.1-2] and there is no packet id [MQTT-2.3.1-5]."""
    assert encode(Publish("a", b"x", 0, dup=True, packet_id=5)) == encode(Publish("a", b"x"))


def test_encode_too_large_for_the_remaining_length() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 268_435_456

    with pytest.raises(ValueError):
        encode(Publish("t", Huge()))


@pytest.mark.parametrize(
    ("name", "packet", "wire", "amqtt", "direction"), [r for r in TABLE if isinstance(r[1], Publish)]
)
def test_encode_publish_matches_encode(name: str, packet: Publish, wire: bytes, amqtt: Any, direction: str) -> None:
    fields = (packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id)
    assert encode_publish(packet.topic, *fields) == wire
    assert encode_publish(packet.topic.encode(), *fields) == wire


def test_encode_publish_refuses_what_encode_refuses() -> None:
    with pytest.raises(ValueError):
        encode_publish("t", b"", 1)
    with pytest.raises(ValueError):
        encode_publish(b"t" * 65536, b"")


def test_a_short_publish_in_one_piece_keeps_its_own_bytes_for_forwarding() -> None:
    """``raw`` is the packet as received when the decoder had it whole; it takes no part in equality."""
    short = encode_publish("a/b", b"x" * 20)
    qos1 = encode_publish("a/b", b"y", 1, packet_id=7)
    large = encode_publish("a/b", b"z" * 300)  # a two-byte remaining length: the general path
    decoder = Decoder(10_000)
    decoder.feed(short + qos1 + large + short[:5])
    first, second, third = decoder.next_packet(), decoder.next_packet(), decoder.next_packet()
    assert isinstance(first, Publish) and first.raw == short and first == Publish("a/b", b"x" * 20)
    assert isinstance(second, Publish) and second.raw == qos1
    assert isinstance(third, Publish) and third.raw is None and third.payload == b"z" * 300
    assert decoder.next_packet() is None
    decoder.feed(short[5:])
    split = decoder.next_packet()  # completed across two feeds: the general path
    assert isinstance(split, Publish) and split.payload == b"x" * 20
    assert split.raw in (None, short)
