"""The MQTT session rules without sockets or an event loop (protocols/mqtt/session.py, errors.py, subscriptions.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.permissions import Rule
from gateway.errors import (
    BadRequest,
    FlowGateError,
    Forbidden,
    InvalidName,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from gateway.payload import Delivery, Kind, Payload
from gateway.topics import Namespace
from protocols.mqtt.errors import PublishReaction, connack_code, publish_reaction, retry_after
from protocols.mqtt.packets import (
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
)
from protocols.mqtt.session import (
    GateState,
    InboundQoS2,
    OutboundWindow,
    PacketGate,
    check_connect,
    delivery_qos,
    foreign_protocol,
    keepalive_deadline,
    packet_id_for_seq,
)
from protocols.mqtt.subscriptions import HubSink, Subscription, best_match

TOKEN = b"header.payload.signature"


def connect(**changes: Any) -> Connect:
    fields: dict[str, Any] = {
        "client_id": "dev",
        "clean_session": True,
        "keepalive": 60,
        "username": "Bearer",
        "password": TOKEN,
    }
    fields.update(changes)
    return Connect(**fields)


# -- packet order -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [PingReq(), Publish("a", b"x"), Subscribe(1, (("a", 0),)), Disconnect(), PubAck(1)])
def test_first_packet_must_be_connect(first: Packet) -> None:
    gate = PacketGate()
    violation = gate.admit(first)
    assert violation is not None and "MQTT-3.1.0-1" in violation.reason
    assert gate.state is GateState.CLOSED
    assert gate.admit(connect()) is not None  # nothing after the violation


def test_second_connect_is_a_violation() -> None:
    gate = PacketGate()
    assert gate.admit(connect()) is None
    gate.accepted()
    assert gate.admit(PingReq()) is None
    violation = gate.admit(connect())
    assert violation is not None and "MQTT-3.1.0-2" in violation.reason


def test_nothing_after_disconnect() -> None:
    gate = PacketGate()
    gate.admit(connect())
    gate.accepted()
    assert gate.admit(Disconnect()) is None
    assert gate.state is GateState.CLOSED
    assert gate.admit(PingReq()) is not None


# -- CONNECT return codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, 0),
        ({"username": "bearer"}, 0),
        ({"protocol_level": 3, "protocol_name": "MQIsdp"}, 1),  # [MQTT-3.1.2-2]
        ({"protocol_level": 5}, 1),
        ({"client_id": "", "clean_session": False}, 2),  # [MQTT-3.1.3-8]
        ({"client_id": "", "clean_session": True}, 0),  # [MQTT-3.1.3-6]
        ({"client_id": "x" * 257}, 2),
        ({"client_id": "a long/odd id with spaces ü" * 5}, 0),  # more than 23 chars is allowed [MQTT-3.1.3-5]
        ({"username": None, "password": None}, 4),
        ({"username": "alice"}, 4),
        ({"password": None}, 4),
        ({"password": b""}, 4),
    ],
)
def test_connect_return_codes(changes: dict[str, object], code: int) -> None:
    assert check_connect(connect(**changes)) == code


def test_foreign_protocol_names_are_closed_without_connack() -> None:
    assert foreign_protocol(connect(protocol_name="hj"))  # [MQTT-3.1.2-1]: the server may just disconnect
    assert not foreign_protocol(connect(protocol_name="MQIsdp", protocol_level=3))  # answered with CONNACK 1
    assert not foreign_protocol(connect())


# -- timers and QoS -------------------------------------------------------------------------------


def test_keepalive_deadline_is_one_and_a_half_times() -> None:
    assert keepalive_deadline(0, 100.0) is None  # 0 turns keepalive off [MQTT-3.1.2-10 note]
    assert keepalive_deadline(10, 100.0) == 115.0  # [MQTT-3.1.2-24]
    assert keepalive_deadline(1, 0.0) == 1.5


@pytest.mark.parametrize(
    ("published", "granted", "out"), [(0, 2, 0), (1, 2, 1), (2, 2, 2), (2, 1, 1), (2, 0, 0), (1, 0, 0)]
)
def test_delivery_at_the_lower_qos(published: int, granted: int, out: int) -> None:
    assert delivery_qos(published, granted) == out  # [MQTT-3.8.4-6]


@pytest.mark.parametrize(("seq", "packet_id"), [(1, 1), (2, 2), (65535, 65535), (65536, 1), (131072, 2)])
def test_packet_id_for_seq(seq: int, packet_id: int) -> None:
    assert packet_id_for_seq(seq) == packet_id


# -- the outbound window --------------------------------------------------------------------------


def test_window_qos1_flow() -> None:
    window: OutboundWindow[str] = OutboundWindow(2)
    a = window.allocate()
    assert a is not None
    window.add(a, 1, "a")
    b = window.allocate()
    assert b is not None and b != a  # unique among messages in flight [MQTT-2.3.1-2]
    window.add(b, 1, "b")
    assert window.allocate() is None and window.free == 0
    assert window.pubrec(a) is False  # a PUBREC for a QoS 1 message is not a QoS 2 flow
    assert window.puback(a) == "a"
    assert window.puback(a) is None  # a second PUBACK is ignored
    assert window.free == 1


def test_window_qos2_flow() -> None:
    window: OutboundWindow[str] = OutboundWindow(10)
    window.add(5, 2, "m")
    assert window.puback(5) is None  # wrong acknowledgement for QoS 2
    assert window.pubcomp(5) is None  # PUBCOMP before PUBREC
    assert window.pubrec(5) is True  # answer PUBREL [MQTT-4.3.3-1]
    assert window.pubrec(5) is True  # a repeated PUBREC gets PUBREL again
    assert 5 in window
    assert window.pubcomp(5) == "m"
    assert 5 not in window  # the id is free again [MQTT-2.3.1-3]


def test_window_skips_identifiers_in_use_when_wrapping() -> None:
    window: OutboundWindow[int] = OutboundWindow(65535)
    window.add(1, 1, 0)
    window.add(2, 1, 0)
    for _ in range(65530):
        packet_id = window.allocate()
        assert packet_id is not None
        window.add(packet_id, 1, 0)
        window.puback(packet_id)
    seen = set()
    for _ in range(10):
        packet_id = window.allocate()
        assert packet_id is not None and packet_id not in (1, 2)
        seen.add(packet_id)
        window.add(packet_id, 1, 0)
    assert len(seen) == 10


def test_window_derived_identifiers() -> None:
    window: OutboundWindow[str] = OutboundWindow(2)
    assert window.can_use(7)
    window.add(7, 1, "x")
    assert not window.can_use(7)
    with pytest.raises(ValueError):
        window.add(7, 1, "y")
    window.add(8, 2, "y")
    assert not window.can_use(9)  # full
    assert [pid for pid, _ in window.items()] == [7, 8]  # in send order for re-sending [MQTT-4.6.0-1]
    assert window.clear() == ["x", "y"]


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=300))
def test_window_never_reuses_an_identifier_in_flight(steps: list[tuple[bool, int]]) -> None:
    window: OutboundWindow[int] = OutboundWindow(20)
    in_flight: list[int] = []
    for send, index in steps:
        if send:
            packet_id = window.allocate()
            if packet_id is None:
                assert len(in_flight) == 20
                continue
            assert packet_id not in in_flight and 1 <= packet_id <= 65535
            window.add(packet_id, 1, packet_id)
            in_flight.append(packet_id)
        elif in_flight:
            packet_id = in_flight.pop(index % len(in_flight))
            assert window.puback(packet_id) == packet_id
    assert len(window) == len(in_flight)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 4)), max_size=300))
def test_window_put_allocates_like_allocate_and_add(steps: list[tuple[bool, int]]) -> None:
    window: OutboundWindow[int] = OutboundWindow(20)
    in_flight: dict[int, int] = {}  # packet id -> qos
    for send, index in steps:
        if send:
            qos = 1 + index % 2
            packet_id = window.put(qos, qos)
            if packet_id is None:
                assert len(in_flight) == 20
                continue
            assert packet_id not in in_flight and 1 <= packet_id <= 65535  # [MQTT-2.3.1-2]
            in_flight[packet_id] = qos
        elif in_flight:
            packet_id = list(in_flight)[index % len(in_flight)]
            qos = in_flight.pop(packet_id)
            if qos == 1:
                assert window.pubrec(packet_id) is False and window.puback(packet_id) == 1
            else:
                assert window.puback(packet_id) is None and window.pubrec(packet_id) is True
                assert window.pubcomp(packet_id) == 2
    assert len(window) == len(in_flight)


def test_inbound_qos2_ids() -> None:
    inbound = InboundQoS2()
    inbound.stored(3)
    assert 3 in inbound  # a re-sent PUBLISH 3 is not stored again [MQTT-4.3.3-2]
    inbound.release(3)
    inbound.release(4)  # unknown ids are fine
    assert 3 not in inbound and len(inbound) == 0
    inbound.restore([1, 2])
    assert inbound.snapshot() == (1, 2)


# -- error reactions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [(Unauthorized(), 4), (Forbidden(), 5), (PaymentRequired(), 5), (Unavailable(), 3), (RateLimited(), 3)],
)
def test_connack_codes_for_errors(error: FlowGateError, code: int) -> None:
    assert connack_code(error) == code


@pytest.mark.parametrize(
    ("error", "reaction"),
    [
        (Forbidden(), PublishReaction.DROP_AND_ACK),
        (RateLimited(details={"retry_after": 0.5}), PublishReaction.RETRY_LATER),
        (PaymentRequired(), PublishReaction.CLOSE),
        (Unavailable(), PublishReaction.CLOSE),
        (InvalidName(), PublishReaction.CLOSE),
        (BadRequest(), PublishReaction.CLOSE),
        (PayloadTooLarge(), PublishReaction.CLOSE),
    ],
)
def test_publish_reactions(error: FlowGateError, reaction: PublishReaction) -> None:
    assert publish_reaction(error) is reaction


def test_retry_after() -> None:
    assert retry_after(RateLimited(details={"retry_after": 0.25})) == 0.25
    assert retry_after(RateLimited()) == 1.0
    assert retry_after(RateLimited(details={"retry_after": 10_000})) == 60.0
    assert retry_after(RateLimited(details={"retry_after": "soon"})) == 1.0


# -- subscriptions ------------------------------------------------------------------------------------

NS = Namespace("alice", "app")


def delivery(topic: str, seq: int = 10, qos: int = 1) -> Delivery:
    return Delivery(seq, NS, topic, Payload(b"x", Kind.TEXT), time.time_ns(), qos)


def test_best_match_takes_the_highest_qos_once() -> None:
    subs = [Subscription("a/#", 2, False), Subscription("a/+", 1, True), Subscription("b", 0, False)]
    match = best_match(subs, delivery("a/x"), Rule())
    assert match is not None and match.topic_filter == "a/#"  # one copy, the maximum QoS [MQTT-3.3.5-1]
    assert best_match(subs, delivery("c"), Rule()) is None
    assert best_match(subs, delivery("a/x"), Rule(deny=("a/x",))) is None


def test_best_match_respects_since_and_dollar() -> None:
    subs = [Subscription("#", 1, False, since=10)]
    assert best_match(subs, delivery("x", seq=10), Rule()) is None  # stored before the subscription
    assert best_match(subs, delivery("x", seq=11), Rule()) is not None
    assert best_match(subs, delivery("$SYS/x", seq=11), Rule()) is None  # [MQTT-4.7.2-1]


class Target:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def deliver_live(self, subscription: Subscription, delivery: Delivery) -> None:
        self.got.append((delivery.topic, subscription.topic_filter))


def test_hub_sink_checks_only_what_the_subject_cannot() -> None:
    target = Target()
    HubSink(target, Subscription("+/b", 0, False), Rule()).deliver(delivery("$a/b"))
    HubSink(target, Subscription("+/b", 0, False), Rule()).deliver(delivery("a/b"))
    HubSink(target, Subscription("a/b", 0, False), Rule(deny=("a/b",))).deliver(delivery("a/b"))
    HubSink(target, Subscription("#", 0, False), Rule()).deliver(delivery("$SYS/x"))
    HubSink(target, Subscription("c/d", 0, False), Rule(deny=("x",))).deliver(delivery("c/d"))
    HubSink(target, Subscription("e/f", 0, False), Rule()).deliver(delivery("e/f"))  # nothing to check
    assert target.got == [("a/b", "+/b"), ("c/d", "c/d"), ("e/f", "e/f")]


def test_window_restores_a_released_qos2_flight() -> None:
    window: OutboundWindow[str] = OutboundWindow(4)
    window.released(12, "restored")  # PUBREC came before the reconnect
    assert window.get(12) == "restored"
    assert window.puback(12) is None and window.pubrec(12) is True  # PUBREC again: PUBREL again
    assert window.pubcomp(12) == "restored"
    assert window.get(12) is None


def test_session_record_round_trip() -> None:
    from gateway.bus.mqtt_store import SessionRecord, StoredSubscription

    record = SessionRecord((StoredSubscription("a/#", 2, 41, True),), pubrel=(3, 9), inbound=(7,))
    again = SessionRecord.from_bytes(record.to_bytes(), revision=5)
    assert again == SessionRecord(record.subscriptions, (3, 9), (7,), 5)
    assert SessionRecord.from_bytes(b'{"subs": []}', 1) == SessionRecord((), (), (), 1)  # older records
    left = SessionRecord((), expires_at=1_700_000_000.5)  # the session's last connection closed
    assert SessionRecord.from_bytes(left.to_bytes(), 0) == left
    assert left.expired(1_700_000_000.5) and not left.expired(1_700_000_000.4) and not again.expired(2e9)
