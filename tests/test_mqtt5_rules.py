"""The sans-I/O MQTT 5 rules (protocols/mqtt/v5.py, shared.py, gateway/message_meta.py): tables, no event loop."""

from __future__ import annotations

import pytest

from gateway.errors import (
    FlowGateError,
    Forbidden,
    InvalidName,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    Unauthorized,
)
from gateway.message_meta import MessageMeta, meta_of
from protocols.mqtt.codec import MQTTProtocolError
from protocols.mqtt.codec5 import ClientDecoder, ServerDecoder, encode5
from protocols.mqtt.packets import Connect, Publish
from protocols.mqtt.properties import NO_PROPERTIES, Properties
from protocols.mqtt.shared import parse_shared
from protocols.mqtt.v5 import (
    SERVER_KEEP_ALIVE_MAX,
    BadAuthenticationMethod,
    OutboundAliases,
    V5Session,
    check_connect5,
    connack_reason,
    expiry_seconds,
    has_message_properties,
    meta_of_publish,
    publish_reason,
    suback_reason,
)


def session(properties: Properties = NO_PROPERTIES) -> V5Session:
    return V5Session.from_connect(Connect("c", True, 30, "Bearer", b"t", protocol_level=5, properties=properties))


def decode(data: bytes) -> Publish:
    decoder = ClientDecoder()
    decoder.feed(data)
    packet = decoder.next_packet()
    assert isinstance(packet, Publish)
    return packet


def test_connect_limits_and_connack() -> None:
    v5 = session(
        Properties(session_expiry_interval=10, receive_maximum=5, maximum_packet_size=100, topic_alias_maximum=3)
    )
    assert (v5.session_expiry_interval, v5.receive_maximum, v5.maximum_packet_size) == (10, 5, 100)
    connack = v5.connack(False, "auto-1", 2048, 1024)
    assert connack.properties.assigned_client_identifier == "auto-1"  # [MQTT-3.2.2-16]
    assert connack.properties.topic_alias_maximum and connack.properties.receive_maximum == 1024
    assert connack.properties.server_keep_alive is None  # the client's 30 s is kept
    assert session().receive_maximum == 65535  # absent: 65535 [3.1.2.11.3]
    keepless = V5Session.from_connect(Connect("c", True, 0, protocol_level=5))
    assert keepless.keepalive == keepless.server_keep_alive == SERVER_KEEP_ALIVE_MAX  # [MQTT-3.2.2-21]


@pytest.mark.parametrize("max_remaining", [100, 127, 128, 16_383, 16_384, 1_114_112])
def test_the_announced_maximum_packet_size_counts_the_whole_packet(max_remaining: int) -> None:
    """Maximum Packet Size is the whole packet [3.2.2.3.6]: one of exactly that size is taken, the next
    larger one is "packet too large" (0x95) [MQTT-3.2.2-15 on the client's side, 4.13 on ours]."""
    maximum = session().connack(False, None, max_remaining, 1024).properties.maximum_packet_size
    assert maximum is not None
    # every PUBLISH of topic "t", QoS 0, by size (the remaining length takes 1-4 bytes of the header)
    sizes = {
        len(p): p for n in range(max_remaining - 8, max_remaining + 4) if (p := encode5(Publish("t", b"x" * n, 0)))
    }
    decoder = ServerDecoder(max_remaining)
    decoder.feed(sizes[maximum])
    assert isinstance(decoder.next_packet(), Publish)
    decoder = ServerDecoder(max_remaining)
    decoder.feed(sizes[min(size for size in sizes if size > maximum)])
    with pytest.raises(MQTTProtocolError) as excinfo:
        decoder.next_packet()
    assert excinfo.value.reason_code == 0x95


@pytest.mark.parametrize(
    ("connect", "code"),
    [
        (Connect("", False, 30, "Bearer", b"t", protocol_level=5), 0),  # empty id, Clean Start 0: assigned
        (Connect("x" * 300, True, 30, "Bearer", b"t", protocol_level=5), 2),
        (Connect("c", True, 30, None, b"t", protocol_level=5), 4),
        (Connect("c", True, 30, None, None, protocol_level=5, properties=Properties(authentication_method="JWT")), 0),
    ],
)
def test_check_connect5(connect: Connect, code: int) -> None:
    assert check_connect5(connect) == code


@pytest.mark.parametrize(
    ("error", "connack", "puback", "suback"),
    [
        (Forbidden("x"), 0x87, 0x87, 0x87),
        (PaymentRequired("x"), 0x97, 0x97, 0x97),
        (RateLimited("x"), 0x9F, 0x96, 0x80),
        (PayloadTooLarge("x"), 0x88, 0x95, 0x80),
        (InvalidName("x"), 0x90, 0x90, 0x8F),
        (Unauthorized("x"), 0x86, 0x80, 0x87),
        (BadAuthenticationMethod("x"), 0x8C, 0x80, 0x87),
    ],
)
def test_error_tables(error: FlowGateError, connack: int, puback: int, suback: int) -> None:
    v311 = {Forbidden: 5, PaymentRequired: 5, Unauthorized: 4, BadAuthenticationMethod: 4}.get(type(error), 3)
    assert connack_reason(v311, error) == connack
    assert publish_reason(error) == puback
    assert suback_reason(error) == suback


def test_outbound_aliases() -> None:
    aliases = OutboundAliases(2)
    assert aliases.use("a") == ("a", 1)
    assert aliases.use("a") == ("", 1)  # [MQTT-3.3.2-12]
    assert aliases.use("b") == ("b", 2)
    assert aliases.use("c") == ("c", None)  # full: no more than the client's maximum [MQTT-3.3.2-9]
    assert OutboundAliases(0).use("a") == ("a", None)  # no aliases unless the client allows them [MQTT-3.3.2-10]


def test_delivery_expiry_size_and_properties() -> None:
    v5 = session(Properties(topic_alias_maximum=1, maximum_packet_size=40))
    meta = MessageMeta(content_type="t", expires_at=100.0, user_properties=(("k", "v"),))
    assert v5.publish("a/b", b"x", 1, False, False, 3, meta, (7,), now=101.0) is None  # expired [MQTT-3.3.2-5]
    assert v5.publish("a/b", b"x" * 50, 0, False, False, None, None, (), now=0) is None  # too large [MQTT-3.1.2-25]
    data = v5.publish("a/b", b"x", 1, False, False, 3, meta, (7,), now=90.5)
    assert data is not None
    packet = decode(data)
    assert packet.topic == "a/b" and packet.packet_id == 3
    # the alias of the skipped message was freed: this one took it
    assert packet.properties == Properties(
        message_expiry_interval=10,  # the remaining time, rounded up [MQTT-3.3.2-6]
        content_type="t",
        subscription_identifiers=(7,),
        topic_alias=1,
        user_properties=(("k", "v"),),
    )


def test_message_meta_header_round_trip_and_publish_meta() -> None:
    props = Properties(
        payload_format_indicator=1,
        content_type="application/json",
        response_topic="r",
        correlation_data=b"\x00\xff",
        user_properties=(("a", "1"), ("a", "2"), ("é", "\u2603")),
        message_expiry_interval=5,
    )
    meta = meta_of_publish(props, 1000.0, "conn-1", retain=True)
    header = meta.to_header()
    assert header.isascii() and "\n" not in header
    assert meta_of({"Fg-Props": header}) == meta
    assert meta.expires_at == 1005.0
    assert meta_of({"Fg-Props": "not json"}) is None and meta_of(None) is None
    assert meta.public_fields()["correlation_data"] == "AP8="
    assert not has_message_properties(Properties(topic_alias=3)) and has_message_properties(props)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [("a/b", None), ("$share/g/a/#", ("g", "a/#")), ("$share/g/+", ("g", "+")), ("$shared/g/a", None)],
)
def test_parse_shared(name: str, parsed: tuple[str, str] | None) -> None:
    assert parse_shared(name) == parsed


@pytest.mark.parametrize("name", ["$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a"])
def test_parse_shared_rejects(name: str) -> None:
    with pytest.raises(InvalidName):
        parse_shared(name)  # [MQTT-4.8.2-1, 4.8.2-2]


def test_session_expiry_is_capped() -> None:
    assert expiry_seconds(0xFFFFFFFF, 600.0) == 600.0
    assert expiry_seconds(30, 600.0) == 30.0


@pytest.mark.parametrize(
    "fields",
    [
        [],
        {"colour": "red"},
        {"content_type": 1},
        {"payload_format": 2},
        {"message_expiry_interval": 0},
        {"message_expiry_interval": True},
        {"user_properties": [["a"]]},
        {"correlation_data": "not base64!"},
    ],
)
def test_json_publishers_properties_are_checked(fields: object) -> None:
    from gateway.errors import BadRequest
    from gateway.message_meta import meta_from_request

    with pytest.raises(BadRequest):
        meta_from_request(fields, 0.0)
