"""Byte tables for the MQTT 5.0 codec (protocols/mqtt/codec5.py, properties.py), cross-checked with paho-mqtt.

- Every property (all seven data types) encodes to the bytes paho-mqtt's own
  ``Properties.pack`` gives, and our decoder reads paho's bytes back; our table
  of which packet may carry which property equals paho's.
- Every v5 packet type is a row of exact bytes, encoded and decoded both ways.
- paho-mqtt in MQTTv5 mode talks to a socket: the packets it sends decode with
  our server decoder to what it was asked to send, and the packets we encode
  (CONNACK, SUBACK, PUBLISH with properties, DISCONNECT) reach its callbacks intact.
- Rejections, each citing the spec: malformed, duplicate and misplaced
  properties, bad reason codes and options, topic aliases, with the reason code.
- A bounded fuzz loop: mutated v5 packets only ever raise ``MQTTProtocolError``.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from typing import Any

import paho.mqtt.client as paho
import paho.mqtt.properties as paho_props
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.mqtt.codec import MQTTProtocolError
from protocols.mqtt.codec5 import ClientDecoder, ServerDecoder, encode5
from protocols.mqtt.packets import (
    Auth,
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
from protocols.mqtt.properties import (
    NO_PROPERTIES,
    PROPERTY_TABLE,
    WILL,
    Properties,
    PropertyError,
    PropertySpec,
    decode_properties,
    encode_properties,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def pk(first: str, body: str) -> bytes:
    """A packet: fixed header byte, then the remaining length (one byte) of ``body``, then ``body``."""
    data = h(body)
    return h(first) + bytes((len(data),)) + data


_PAHO = paho_props.Properties(PacketTypes.CONNECT)
PAHO_NAME = {identifier: name.replace(" ", "") for name, identifier in _PAHO.names.items()}

SAMPLE: dict[str, Any] = {  # one value of each data type, for a property of that kind
    "byte": 1,
    "two": 513,
    "four": 70000,
    "varint": 268_435_455,
    "utf8": "héllo/wörld",
    "binary": b"\x00\x01\xff",
    "pair": ("kéy", "välue"),
}


@pytest.mark.parametrize("spec", PROPERTY_TABLE, ids=lambda s: s.field)
def test_each_property_encodes_as_paho_does(spec: PropertySpec) -> None:
    value = SAMPLE[spec.kind]
    packet = min(spec.packets)
    paho_type = PacketTypes.WILLMESSAGE if packet == WILL else packet
    theirs = paho_props.Properties(paho_type)
    setattr(theirs, PAHO_NAME[spec.identifier], [value] if spec.repeatable else value)
    field: Any = (value,) if spec.repeatable else value  # its type follows spec.kind, known only at run time
    ours = Properties(**{spec.field: field})
    assert encode_properties(ours, packet) == theirs.pack()
    decoded, end = decode_properties(theirs.pack(), 0, len(theirs.pack()), packet)
    assert decoded == ours and end == len(theirs.pack())


def test_allowed_packets_match_paho() -> None:
    for spec in PROPERTY_TABLE:
        theirs = {99 if t == PacketTypes.WILLMESSAGE else t for t in _PAHO.properties[spec.identifier][1]}
        ours = {99 if t == WILL else t for t in spec.packets}
        assert ours == theirs, spec.field


def test_many_properties_in_one_block_match_paho() -> None:
    theirs = paho_props.Properties(PacketTypes.PUBLISH)
    theirs.PayloadFormatIndicator = 1
    theirs.MessageExpiryInterval = 30
    theirs.ContentType = "application/json"
    theirs.ResponseTopic = "replies/1"
    theirs.CorrelationData = b"\x01\x02"
    theirs.TopicAlias = 7
    theirs.UserProperty = [("a", "1"), ("a", "2"), ("b", "")]
    ours = Properties(
        payload_format_indicator=1,
        message_expiry_interval=30,
        content_type="application/json",
        response_topic="replies/1",
        correlation_data=b"\x01\x02",
        topic_alias=7,
        user_properties=(("a", "1"), ("a", "2"), ("b", "")),
    )
    assert encode_properties(ours, 3) == theirs.pack()


# -- exact packet bytes -------------------------------------------------------------------------

UP = Properties(user_properties=(("k", "v"),))
UP_BYTES = "07 | 26 0001 6b 0001 76"
ROWS: list[tuple[str, Packet, bytes]] = [
    (
        "connect-props-will-password-only",
        Connect(
            "c1",
            True,
            30,
            None,
            b"pw",
            Will("w/t", b"bye", 1, True, Properties(will_delay_interval=5)),
            "MQTT",
            5,
            Properties(session_expiry_interval=60, receive_maximum=10),
        ),
        h("10 2b | 0004 4d515454 05 6e 001e | 08 1100 00003c 21000a | 0002 6331 | 05 18 00000005 | 0003 772f74 "
          "| 0003 627965 | 0002 7077"),
    ),
    ("connack", ConnAck(True, 0, Properties(assigned_client_identifier="a", topic_alias_maximum=5)),
     pk("20", "01 00 | 07 12 0001 61 22 0005")),
    ("connack-refused", ConnAck(False, 0x87), pk("20", "00 87 00")),
    ("publish-qos0-props", Publish("a/b", b"hi", properties=Properties(topic_alias=2)),
     pk("30", "0003 612f62 | 03 23 0002 | 6869")),
    ("publish-qos1-noprops", Publish("a", b"x", 1, True, True, 5), pk("3b", "0001 61 | 0005 | 00 | 78")),
    ("publish-empty-topic-alias", Publish("", b"", 2, packet_id=1, properties=Properties(topic_alias=1)),
     pk("34", "0000 | 0001 | 03 23 0001")),
    ("publish-qos1-long", Publish("a", b"x" * 200, 1, packet_id=5),
     h("32 ce01 | 0001 61 | 0005 | 00 | " + "78" * 200)),  # remaining length 206 in two bytes
    ("publish-qos0-long-props", Publish("a", b"x" * 200, properties=Properties(content_type="t")),
     h("30 d001 | 0001 61 | 04 03 0001 74 | " + "78" * 200)),
    ("puback-short", PubAck(7), pk("40", "0007")),
    ("puback-reason", PubAck(7, 0x10), pk("40", "0007 10")),
    ("pubrec-reason-props", PubRec(7, 0x87, UP), h("50 0b 0007 87 " + UP_BYTES)),
    ("pubrel", PubRel(7, 0x92), pk("62", "0007 92")),
    ("pubcomp", PubComp(9), pk("70", "0009")),
    ("subscribe-options", Subscribe(3, (("a/#", 1), ("b", 2)), Properties(subscription_identifiers=(9,)),
                                    (0x2D, 0x02)),
     pk("82", "0003 | 02 0b09 | 0003 612f23 2d | 0001 62 02")),
    ("suback", SubAck(3, (1, 0x87, 0x97)), pk("90", "0003 | 00 | 01 87 97")),
    ("unsubscribe", Unsubscribe(4, ("a", "b/+")), pk("a2", "0004 | 00 | 0001 61 | 0003 622f2b")),
    ("unsuback", UnsubAck(4, (0, 0x11)), pk("b0", "0004 | 00 | 00 11")),
    ("pingreq", PingReq(), h("c0 00")),
    ("pingresp", PingResp(), h("d0 00")),
    ("disconnect-short", Disconnect(), h("e0 00")),
    ("disconnect-reason", Disconnect(0x8E), pk("e0", "8e")),
    ("disconnect-props", Disconnect(0x04, Properties(session_expiry_interval=0)), pk("e0", "04 05 11 00000000")),
    ("auth", Auth(0x19, Properties(authentication_method="JWT", authentication_data=b"t")),
     pk("f0", "19 | 0a 15 0003 4a5754 16 0001 74")),
]  # fmt: skip
C2S = {Connect, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq, Disconnect, Auth}


def _server_decode(data: bytes, alias_max: int = 10) -> list[Packet]:
    decoder = ServerDecoder(1 << 20, topic_alias_maximum=alias_max)
    decoder.feed(h("10 0d 0004 4d515454 05 02 003c 00 0000"))  # a v5 CONNECT switches the decoder to MQTT 5
    assert decoder.next_packet() == Connect("", True, 60, protocol_level=5)
    decoder.feed(data)
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


@pytest.mark.parametrize(("packet", "data"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_packet_bytes(packet: Packet, data: bytes) -> None:
    assert encode5(packet) == data
    if type(packet) in C2S and not (type(packet) is Publish and not packet.topic):
        if type(packet) is Connect:
            decoder = ServerDecoder(1 << 20)
            decoder.feed(data)
            assert decoder.next_packet() == packet
            assert decoder.version == 5
        else:
            assert _server_decode(data) == [packet]
    if type(packet) not in (Connect, Subscribe, Unsubscribe, PingReq, Auth) or type(packet) is Auth:
        client = ClientDecoder()
        client.feed(data)
        if type(packet) in (Connect, Subscribe, Unsubscribe, PingReq):
            return
        assert client.next_packet() == packet


def test_topic_alias_is_resolved_and_a_3_1_1_connect_stays_3_1_1() -> None:
    first = encode5(Publish("x/y", b"1", properties=Properties(topic_alias=3)))
    again = encode5(Publish("", b"2", properties=Properties(topic_alias=3)))
    packets = _server_decode(first + again)
    publishes = [p for p in packets if isinstance(p, Publish)]
    assert publishes == packets and [(p.topic, p.payload) for p in publishes] == [("x/y", b"1"), ("x/y", b"2")]
    decoder = ServerDecoder(1 << 20)
    decoder.feed(h("10 0c 0004 4d515454 04 02 003c 0000") + pk("30", "0001 61 6869"))
    assert decoder.next_packet() == Connect("", True, 60)
    assert decoder.next_packet() == Publish("a", b"hi")
    assert decoder.version == 4


def test_a_short_qos_0_publish_without_properties_keeps_its_own_bytes_for_forwarding() -> None:
    """MQTT 5 ``raw``: only a QoS 0 PUBLISH without flags or properties and with a one-byte remaining length,
    the bytes an MQTT 5 QoS 0 subscriber gets (``render_qos0``); it takes no part in equality."""
    short = encode5(Publish("a/b", b"x" * 20))
    qos1 = encode5(Publish("a/b", b"y", 1, packet_id=7))
    retained = encode5(Publish("a/b", b"r", retain=True))
    with_props = encode5(Publish("a/b", b"p", properties=Properties(content_type="text/plain")))
    large = encode5(Publish("a/b", b"z" * 300))  # a two-byte remaining length
    packets = _server_decode(short + qos1 + retained + with_props + large + short[:5])
    assert [p.raw if isinstance(p, Publish) else p for p in packets] == [short, None, None, None, None]
    assert packets[0] == Publish("a/b", b"x" * 20)
    decoder = ServerDecoder(1 << 20)
    decoder.feed(h("10 0d 0004 4d515454 05 02 003c 00 0000"))
    assert decoder.next_packet() == Connect("", True, 60, protocol_level=5)
    decoder.feed(short[:5])
    assert decoder.next_packet() is None
    decoder.feed(short[5:])  # completed across two feeds: the general path keeps it too
    split = decoder.next_packet()
    assert isinstance(split, Publish) and split.raw == short
    client = ClientDecoder()  # what a server sends a client is not kept
    client.feed(short)
    received = client.next_packet()
    assert isinstance(received, Publish) and received.raw is None


# -- rejections with their reason codes -----------------------------------------------------------

BAD: list[tuple[str, bytes, int]] = [
    ("unknown property id [2.2.2.2]", pk("30", "0001 61 02 7f 00"), 0x81),
    ("property not valid for PUBLISH [2.2.2.2]", pk("30", "0001 61 03 21 0001"), 0x81),
    ("duplicate content type [2.2.2.2]", pk("30", "0001 61 08 03 0001 61 03 0001 62"), 0x82),
    ("property length past the packet", pk("30", "0001 61 09"), 0x81),
    ("property value truncated", pk("30", "0001 61 02 02 00"), 0x81),
    ("varint of five bytes [MQTT-1.5.5-1]", pk("30", "0001 61 05 0b ff ff ff ff"), 0x81),
    ("payload format indicator 2", pk("30", "0001 61 02 01 02"), 0x82),
    ("content type not UTF-8 [MQTT-1.5.4-1]", pk("30", "0001 61 04 03 0001 ff"), 0x81),
    ("user property with U+0000 [MQTT-1.5.4-2]", pk("30", "0001 61 08 26 0001 00 0001 61 78"), 0x81),
    ("subscription identifier from a client [MQTT-3.3.4-6]", pk("30", "0001 61 02 0b 01"), 0x82),
    ("topic alias 0 [MQTT-3.3.2-8]", pk("30", "0001 61 03 23 0000"), 0x94),
    ("topic alias above the maximum [MQTT-3.3.2-8]", pk("30", "0001 61 03 23 000b"), 0x94),
    ("empty topic, unknown alias [3.3.2.3.4]", pk("30", "0000 03 23 0001"), 0x82),
    ("empty topic, no alias [MQTT-4.7.3-1]", pk("30", "0000 00"), 0x82),
    ("wildcard in topic name [MQTT-3.3.2-2]", pk("30", "0001 23 00"), 0x90),
    ("single-level wildcard in topic name [MQTT-3.3.2-2]", pk("30", "0003 612f2b 00"), 0x90),
    ("topic name with U+0000 [MQTT-1.5.3-2]", pk("30", "0003 610062 00"), 0x81),
    ("topic name not UTF-8 [MQTT-1.5.3-1]", pk("30", "0002 61ff 00"), 0x81),
    ("topic name past the packet", pk("30", "0005 61 00"), 0x81),
    ("publish packet identifier 0 [MQTT-2.3.1-1]", pk("32", "0001 61 0000 00"), 0x81),
    ("puback with an unknown reason code", pk("40", "0001 05"), 0x82),
    ("pubrel with a PUBACK reason code", pk("62", "0001 10"), 0x82),
    ("subscribe reserved option bits [MQTT-3.8.3-5]", pk("82", "0001 00 0001 61 c1"), 0x81),
    ("subscribe retain handling 3 [3.8.3.1]", pk("82", "0001 00 0001 61 31"), 0x82),
    ("subscribe without filters [MQTT-3.8.3-2]", pk("82", "0001 00"), 0x82),
    ("subscription identifier 0 [3.8.2.1.2]", pk("82", "0001 02 0b 00 0001 61 01"), 0x82),
    ("two subscription identifiers in SUBSCRIBE", pk("82", "0001 04 0b 01 0b 02 0001 61 01"), 0x82),
    ("unsubscribe without filters [MQTT-3.10.3-2]", pk("a2", "0001 00"), 0x82),
    ("disconnect with a CONNACK-only reason code", pk("e0", "84"), 0x82),
    ("disconnect with a CONNACK-only property", pk("e0", "00 03 13 0001"), 0x81),
    ("auth with a bad reason code", pk("f0", "01"), 0x82),
    ("packet too large", h("30 ff ff ff 7f"), 0x95),
]


@pytest.mark.parametrize(("data", "code"), [r[1:] for r in BAD], ids=[r[0] for r in BAD])
def test_rejections_carry_the_reason_code(data: bytes, code: int) -> None:
    with pytest.raises(MQTTProtocolError) as info:
        _server_decode(data)
    assert info.value.reason_code == code, info.value.reason


def test_connect_rejections() -> None:
    base = "0004 4d515454 05"
    for flags_and_rest, code in [
        ("03 003c 00 0000", 0x81),  # reserved flag [MQTT-3.1.2-3]
        ("12 003c 00 0000", 0x81),  # will QoS without will flag [MQTT-3.1.2-11]
        ("02 003c 03 21 0000 0000", 0x82),  # receive maximum 0 [3.1.2.11.3]
        ("02 003c 05 27 00000000 0000", 0x82),  # maximum packet size 0 [3.1.2.11.4]
        ("02 003c 02 17 02 0000", 0x82),  # request problem information 2
        ("02 003c 03 23 0001 0000", 0x81),  # topic alias is not a CONNECT property
    ]:
        body = h(base + flags_and_rest)
        decoder = ServerDecoder(1 << 20)
        decoder.feed(bytes((0x10, len(body))) + body)
        with pytest.raises(MQTTProtocolError) as info:
            decoder.next_packet()
        assert info.value.reason_code == code, flags_and_rest


def test_property_errors_in_isolation() -> None:
    with pytest.raises(PropertyError) as info:
        decode_properties(h("06 26 0001 61 0001"), 0, 7, 3)
    assert info.value.reason_code == 0x81
    with pytest.raises(ValueError):
        encode_properties(Properties(topic_alias=1), 1)  # not a CONNECT property
    assert encode_properties(NO_PROPERTIES) == b"\x00"


# -- paho-mqtt v5 on a socket ---------------------------------------------------------------------


class _Peer:
    """The server end of one paho connection: our decoder reads what paho sends."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sock: socket.socket | None = None
        self.decoder = ServerDecoder(1 << 20, topic_alias_maximum=10)

    def accept(self) -> None:
        self.listener.settimeout(10)
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(10)

    def expect(self) -> Packet:
        assert self.sock is not None
        while (packet := self.decoder.next_packet()) is None:
            data = self.sock.recv(65536)
            assert data, "paho closed the connection"
            self.decoder.feed(data)
        return packet

    def send(self, packet: Packet) -> None:
        assert self.sock is not None
        self.sock.sendall(encode5(packet))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


def test_paho_v5_packets_decode_and_ours_reach_paho() -> None:
    peer = _Peer()
    got: dict[str, Any] = {"messages": []}
    event = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="dev-1", protocol=paho.MQTTv5)
    client.username_pw_set("Bearer", "tok")
    will = paho_props.Properties(PacketTypes.WILLMESSAGE)
    will.WillDelayInterval = 10
    will.ContentType = "text/plain"
    client.will_set("will/t", b"gone", qos=1, retain=False, properties=will)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, props: Any) -> None:
        got["connack"] = (reason.value, getattr(props, "AssignedClientIdentifier", None))
        event.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got["messages"].append(msg)
        event.set()

    client.on_connect = on_connect
    client.on_message = on_message
    connect_props = paho_props.Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 300
    connect_props.ReceiveMaximum = 20
    connect_props.UserProperty = [("app", "x")]
    client.connect("127.0.0.1", peer.port, keepalive=25, clean_start=True, properties=connect_props)
    client.loop_start()
    try:
        peer.accept()
        connect = peer.expect()
        assert connect == Connect(
            "dev-1",
            True,
            25,
            "Bearer",
            b"tok",
            Will("will/t", b"gone", 1, False, Properties(content_type="text/plain", will_delay_interval=10)),
            "MQTT",
            5,
            Properties(session_expiry_interval=300, receive_maximum=20, user_properties=(("app", "x"),)),
        )
        peer.send(ConnAck(False, 0, Properties(assigned_client_identifier="given", topic_alias_maximum=10)))
        assert event.wait(10)
        assert got["connack"] == (0, "given")

        pub_props = paho_props.Properties(PacketTypes.PUBLISH)
        pub_props.ContentType = "application/json"
        pub_props.CorrelationData = b"\x00\x01"
        pub_props.ResponseTopic = "r/1"
        pub_props.UserProperty = [("a", "1"), ("a", "2")]
        pub_props.MessageExpiryInterval = 60
        client.publish("t/1", b"{}", qos=1, properties=pub_props)
        publish = peer.expect()
        assert isinstance(publish, Publish) and publish.qos == 1 and publish.topic == "t/1"
        assert publish.properties == Properties(
            message_expiry_interval=60,
            content_type="application/json",
            response_topic="r/1",
            correlation_data=b"\x00\x01",
            user_properties=(("a", "1"), ("a", "2")),
        )
        peer.send(PubAck(publish.packet_id or 0, 0x10))

        sub_props = paho_props.Properties(PacketTypes.SUBSCRIBE)
        sub_props.SubscriptionIdentifier = 42
        options = SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True, retainHandling=2)
        client.subscribe([("s/#", options)], properties=sub_props)
        subscribe = peer.expect()
        assert isinstance(subscribe, Subscribe)
        assert subscribe.topics == (("s/#", 2),) and subscribe.options == (0b101110,)
        assert subscribe.properties == Properties(subscription_identifiers=(42,))
        peer.send(SubAck(subscribe.packet_id, (2,)))

        event.clear()
        out = Properties(content_type="c", user_properties=(("u", "v"),), subscription_identifiers=(42,))
        peer.send(Publish("s/x", b"payload", 1, False, False, 77, properties=out))
        assert event.wait(10)
        message = got["messages"][0]
        assert (message.topic, message.payload, message.qos) == ("s/x", b"payload", 1)
        assert message.properties.ContentType == "c"
        assert message.properties.UserProperty == [("u", "v")]
        assert message.properties.SubscriptionIdentifier == [42]
        assert peer.expect() == PubAck(77)

        client.unsubscribe("s/#")
        unsubscribe = peer.expect()
        assert isinstance(unsubscribe, Unsubscribe) and unsubscribe.topics == ("s/#",)
        peer.send(UnsubAck(unsubscribe.packet_id, (0,)))

        client.publish("t/2", b"q2", qos=2)
        q2 = peer.expect()
        assert isinstance(q2, Publish) and q2.qos == 2
        peer.send(PubRec(q2.packet_id or 0))
        assert peer.expect() == PubRel(q2.packet_id or 0)
        peer.send(PubComp(q2.packet_id or 0))

        client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
        assert peer.expect() == Disconnect(0x04)
    finally:
        client.loop_stop()
        peer.close()


# -- fuzz ------------------------------------------------------------------------------------------


FUZZ_INPUTS = int(os.environ.get("MQTT5_FUZZ_INPUTS", "20000"))


def _mutate(rng: random.Random, data: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.55 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op < 0.75:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op < 0.9 and data:
            del data[rng.randrange(len(data))]
        else:
            data = data[: rng.randrange(len(data) + 1)]
    return data


def test_fuzz_mutated_v5_packets() -> None:
    """Seeded mutations of every client packet, fed whole and in random chunks: only ``MQTTProtocolError``
    (with a reason code) comes out, chunking changes nothing, and what decodes re-encodes to itself.

    ``MQTT5_FUZZ_INPUTS=1000000`` runs the million-input fuzz (a few minutes); ``make test`` runs 20,000.
    """
    seeds = [data for _, packet, data in ROWS if type(packet) in C2S and type(packet) is not Connect]
    rng = random.Random(5)
    decoded = 0
    for _ in range(FUZZ_INPUTS):
        data = bytes(_mutate(rng, bytearray(rng.choice(seeds))))
        whole = _outcome(data, [data])
        cut = sorted(rng.sample(range(len(data) + 1), min(2, len(data) + 1)))
        chunks = [data[a:b] for a, b in itertools.pairwise([0, *cut, len(data)])]
        assert _outcome(data, chunks) == whole
        for packet in whole[0]:
            decoded += 1
            if type(packet) is Publish and not packet.topic:
                continue
            assert _server_decode(encode5(packet)) == [packet]
    assert decoded > FUZZ_INPUTS // 20  # the mutations are not all rejected at once


def _outcome(data: bytes, chunks: list[bytes]) -> tuple[list[Packet], int | None]:
    decoder = ServerDecoder(1 << 20, topic_alias_maximum=10)
    decoder.feed(h("10 0d 0004 4d515454 05 02 003c 00 0000"))
    decoder.next_packet()
    packets: list[Packet] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (packet := decoder.next_packet()) is not None:
                packets.append(packet)
    except MQTTProtocolError as exc:
        assert 0x80 <= exc.reason_code <= 0xA2
        return packets, exc.reason_code
    return packets, None
