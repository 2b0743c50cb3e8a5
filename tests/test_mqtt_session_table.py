"""MqttSession without sockets or an event loop: every (state, packet type) pair, MQTT 3.1.1 and 5 (protocols/mqtt/session.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import PaymentRequired, Unavailable
from protocols.mqtt.actions import (
    SAVE_SESSION,
    Action,
    AddSubscriptions,
    Authenticate,
    Close,
    Complete,
    Reauthenticate,
    Release,
    RemoveSubscriptions,
    Send,
    SendAfterAcks,
    SetTimer,
    Store,
    StoreFailed,
)
from protocols.mqtt.codec import encode
from protocols.mqtt.codec5 import encode5
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
)
from protocols.mqtt.properties import Properties, ReasonCode
from protocols.mqtt.session import TABLE, TRACK_EVERY, MqttSession, Result, State
from protocols.mqtt.subscriptions import Outgoing
from protocols.mqtt.v5 import RECEIVE_MAXIMUM

R = ReasonCode
TOKEN = b"header.payload.signature"
VERSIONS = (4, 5)

# One packet of each type, as a client would send it (and the ones only a server sends).
SAMPLES: dict[type[Packet], Packet] = {
    Connect: Connect("dev", True, 60, "Bearer", TOKEN),
    ConnAck: ConnAck(False, 0),
    Publish: Publish("a/b", b"x", 1, packet_id=7),
    PubAck: PubAck(7),
    PubRec: PubRec(7),
    PubRel: PubRel(7),
    PubComp: PubComp(7),
    Subscribe: Subscribe(1, (("a/#", 1),)),
    SubAck: SubAck(1, (1,)),
    Unsubscribe: Unsubscribe(2, ("a/#",)),
    UnsubAck: UnsubAck(2),
    PingReq: PingReq(),
    PingResp: PingResp(),
    Disconnect: Disconnect(),
    Auth: Auth(R.RE_AUTHENTICATE, Properties(authentication_method="JWT", authentication_data=TOKEN)),
}


def connect(level: int, **changes: Any) -> Connect:
    fields: dict[str, Any] = {
        "client_id": "dev",
        "clean_session": True,
        "keepalive": 60,
        "username": "Bearer",
        "password": TOKEN,
        "protocol_level": level,
    }
    if level == 5:
        fields["properties"] = Properties(authentication_method="JWT", authentication_data=TOKEN)
    fields.update(changes)
    return Connect(**fields)


def session_in(state: State, level: int, *, persistent: bool = False) -> MqttSession:
    """A session brought to ``state`` the way a client and the gateway would."""
    session = MqttSession(window=4, max_packet_size=1 << 20)
    if state is State.AWAIT_CONNECT:
        return session
    if level == 5 and persistent:
        props = Properties(session_expiry_interval=60, authentication_method="JWT", authentication_data=TOKEN)
        hello = connect(5, clean_session=False, properties=props)
    else:
        hello = connect(level, clean_session=not persistent)
    assert isinstance(session.receive(hello), Authenticate)
    if state is State.CONNECTING:
        return session
    session.accepted(False, None, 0.0)
    if state is State.CLOSED:
        assert isinstance(session.receive(Disconnect()), Close)
    assert session.state is state
    return session


def actions(result: Result) -> list[Action]:
    return [] if result is None else result if isinstance(result, list) else [result]


def expected(state: State, kind: type[Packet], level: int) -> list[type[Action]]:
    """What each allowed pair asks for, with nothing in flight; every other pair closes the connection."""
    if (state, kind) not in TABLE:
        return [Close]
    allowed: dict[type[Packet], list[type[Action]]] = {
        Connect: [Authenticate],
        Publish: [Store],
        PubAck: [],  # nothing in flight: ignored
        PubRec: [],
        PubRel: [SendAfterAcks],  # PUBCOMP even for an unknown id [MQTT-4.3.3-2]
        PubComp: [],
        Subscribe: [AddSubscriptions],
        Unsubscribe: [RemoveSubscriptions],
        PingReq: [Send],
        Disconnect: [Close],
        Auth: [Reauthenticate] if level == 5 else [Close],
    }
    return allowed[kind]


@pytest.mark.parametrize("level", VERSIONS)
@pytest.mark.parametrize("kind", list(SAMPLES))
@pytest.mark.parametrize("state", list(State))
def test_every_state_and_packet_type(state: State, kind: type[Packet], level: int) -> None:
    session = session_in(state, level)
    got = actions(session.receive(SAMPLES[kind]))
    assert [type(action) for action in got] == expected(state, kind, level)
    if (state, kind) not in TABLE:
        (close,) = got
        assert isinstance(close, Close) and close.reason.startswith("protocol error")
        assert close.code == R.PROTOCOL_ERROR and close.will
        assert session.state is State.CLOSED
        # nothing more is handled after a violation
        assert isinstance(session.receive(PingReq()), Close)


def test_table_covers_only_client_packets_when_connected() -> None:
    server_only = {ConnAck, SubAck, UnsubAck, PingResp}
    assert {kind for state, kind in TABLE if state is State.CONNECTED} == set(SAMPLES) - server_only - {Connect}
    assert {kind for state, kind in TABLE if state is not State.CONNECTED} == {Connect}


@pytest.mark.parametrize(
    ("state", "packet", "clause"),
    [
        (State.AWAIT_CONNECT, PingReq(), "MQTT-3.1.0-1"),
        (State.CONNECTED, SAMPLES[Connect], "MQTT-3.1.0-2"),
        (State.CLOSED, PingReq(), "after the connection ended"),
    ],
)
def test_violation_reasons(state: State, packet: Packet, clause: str) -> None:
    close = session_in(state, 4).receive(packet)
    assert isinstance(close, Close) and clause in close.reason


# -- CONNECT ------------------------------------------------------------------------------------------


def test_foreign_protocol_closes_without_connack() -> None:
    session = MqttSession(window=4, max_packet_size=1024)
    close = session.receive(connect(4, protocol_name="HTTP"))
    assert isinstance(close, Close) and "MQTT-3.1.2-1" in close.reason and not close.will


@pytest.mark.parametrize(
    ("hello", "data"),
    [
        (connect(3, protocol_name="MQIsdp"), encode(ConnAck(False, 1))),  # [MQTT-3.1.2-2]
        (connect(4, password=None), encode(ConnAck(False, 4))),
        (connect(4, client_id="", clean_session=False), encode(ConnAck(False, 2))),  # [MQTT-3.1.3-8]
    ],
)
def test_refused_connect_gets_connack_then_close(hello: Connect, data: bytes) -> None:
    session = MqttSession(window=4, max_packet_size=1024)
    send, close = actions(session.receive(hello))
    assert send == Send(data)
    assert isinstance(close, Close) and not close.will
    assert session.state is State.CLOSED


def test_refused_v5_connect_has_a_reason_code() -> None:
    session = MqttSession(window=4, max_packet_size=1024)
    session.receive(connect(5))
    send, close = session.refused(5, "no", PaymentRequired("quota spent"))
    assert send.data[0] == 0x20 and send.data[3] == R.QUOTA_EXCEEDED
    assert not close.will


def test_accepted_sends_connack_and_sets_the_keepalive_timer() -> None:
    session = session_in(State.CONNECTING, 4)
    send, timer = session.accepted(True, None, 100.0)
    assert send == Send(encode(ConnAck(True, 0)))
    assert timer == SetTimer(100.0 + 1.5 * 60)  # [MQTT-3.1.2-24]
    assert session.state is State.CONNECTED


def test_v5_connect_sizes_the_window_by_receive_maximum() -> None:
    session = MqttSession(window=100, max_packet_size=1024)
    props = Properties(receive_maximum=3, authentication_method="JWT", authentication_data=TOKEN)
    session.receive(connect(5, properties=props))
    assert session.window.size == 3  # [MQTT-3.3.4-9]
    (send,) = [a for a in session.accepted(False, "auto-1", 0.0) if isinstance(a, Send)]
    assert send.data[0] == 0x20 and b"auto-1" in send.data  # assigned client identifier [MQTT-3.2.2-16]


def test_keepalive_due() -> None:
    session = session_in(State.CONNECTED, 4)
    assert session.keepalive_due(50.0, 0.0) == SetTimer(90.0)
    close = session.keepalive_due(90.0, 0.0)
    assert isinstance(close, Close) and close.code == R.KEEP_ALIVE_TIMEOUT and close.will
    assert session.keepalive_due(200.0, 0.0) is None  # closed


def test_restore_resends_pubrel() -> None:
    session = session_in(State.CONNECTED, 4, persistent=True)
    assert session.restore((3,), (9,)) == [Send(encode(PubRel(9)))]  # [MQTT-4.4.0-1]
    assert 3 in session.inbound and 9 in session.window
    assert actions(session.receive(PubComp(9)))[0] is SAVE_SESSION


# -- PUBLISH from the client, and acknowledgements in order ---------------------------------------------


@pytest.mark.parametrize("level", VERSIONS)
def test_qos2_duplicate_is_acknowledged_not_stored(level: int) -> None:
    session = session_in(State.CONNECTED, level, persistent=True)
    publish = Publish("a", b"x", 2, packet_id=5)
    assert isinstance(session.receive(publish), Store)
    assert session.published(publish, session.pending(publish)) is SAVE_SESSION
    assert session.receive(publish) == SendAfterAcks(encode(PubRec(5)))  # [MQTT-4.3.3-2]
    assert session.receive(PubRel(5)) == [SAVE_SESSION, SendAfterAcks(encode(PubComp(5)))]
    assert isinstance(session.receive(publish), Store)  # a new message with that id now


def test_pubrel_for_an_unknown_id_in_v5() -> None:
    session = session_in(State.CONNECTED, 5)
    assert session.receive(PubRel(9)) == SendAfterAcks(encode5(PubComp(9, R.PACKET_IDENTIFIER_NOT_FOUND)))


def test_acknowledgements_follow_the_stores_in_order() -> None:
    session = session_in(State.CONNECTED, 4)
    first, second = Publish("a", b"1", 1, packet_id=1), Publish("a", b"2", 1, packet_id=2)
    pending = [session.pending(first), session.pending(second)]
    for packet, ack in zip((first, second), pending, strict=True):
        session.published(packet, ack)
    assert pending[0] is not None and pending[1] is not None
    pending[1](None, None)  # the second store answered first
    out: list[bytes] = []
    assert session.drain_acks(out) is None and out == []
    assert not session.after_acks(b"ping")  # waits behind the PUBACKs
    pending[0](None, None)
    session.drain_acks(out)
    assert out == [encode(PubAck(1)), encode(PubAck(2)), b"ping"]  # [MQTT-4.6.0-2]
    assert session.after_acks(b"now")


def test_store_failures() -> None:
    session = session_in(State.CONNECTED, 4)
    qos0 = Publish("a", b"0", 0)
    tracked = session.pending(qos0)
    assert tracked is not None  # the first QoS 0 publish is tracked, then one in TRACK_EVERY
    session.published(qos0, tracked)
    assert all(session.pending(qos0) is None for _ in range(TRACK_EVERY - 1))
    qos1 = Publish("a", b"1", 1, packet_id=1)
    pending = session.pending(qos1)
    session.published(qos1, pending)
    tracked(None, Unavailable("down"))
    assert pending is not None
    pending(None, Unavailable("down"))
    failed, close = actions(session.drain_acks([]))
    assert isinstance(failed, StoreFailed)  # QoS 0: counted, nothing to tell the client
    assert isinstance(close, Close) and close.will  # no PUBACK: the client re-sends [MQTT-4.4.0-1]


def test_receive_maximum_exceeded() -> None:
    session = session_in(State.CONNECTED, 5)
    results = [session.published(Publish("a", b"x", 1, packet_id=i), None) for i in range(1, RECEIVE_MAXIMUM + 2)]
    close = results[-1]
    assert all(r is None for r in results[:-1])
    assert isinstance(close, Close) and close.code == R.RECEIVE_MAXIMUM_EXCEEDED  # [MQTT-3.3.4-8]


# -- deliveries to the client -----------------------------------------------------------------------------


def test_puback_completes_a_delivery() -> None:
    session = session_in(State.CONNECTED, 4)
    item = Outgoing("a", b"x", 1)
    packet_id = session.window.put(1, item)
    assert packet_id is not None
    assert session.receive(PubAck(packet_id)) == Complete(item)
    assert session.receive(PubAck(packet_id)) is None  # twice: ignored


@pytest.mark.parametrize("persistent", [False, True])
def test_qos2_delivery_flow(persistent: bool) -> None:
    session = session_in(State.CONNECTED, 4, persistent=persistent)
    item = Outgoing("a", b"x", 2, packet_id=4, ack_subject="$JS.ACK.x")
    session.window.add(4, 2, item)
    got = actions(session.receive(PubRec(4)))
    pubrel = Send(encode(PubRel(4)))
    assert got == ([Release(4, item), pubrel] if persistent else [pubrel])  # [MQTT-4.3.3-1]
    complete = actions(session.receive(PubComp(4)))
    assert complete == ([SAVE_SESSION, Complete(item)] if persistent else [Complete(item)])


# -- the end ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "packet", "will"),
    [
        (4, Disconnect(), False),  # [MQTT-3.1.2-10]
        (5, Disconnect(), False),
        (5, Disconnect(R.DISCONNECT_WITH_WILL), True),  # [3.14.2.1]
    ],
)
def test_disconnect_decides_the_will(level: int, packet: Disconnect, will: bool) -> None:
    close = session_in(State.CONNECTED, level).receive(packet)
    assert close == Close("client disconnected", None, will)


def test_disconnect_cannot_keep_a_session_that_was_to_end() -> None:
    session = session_in(State.CONNECTED, 5)
    close = session.receive(Disconnect(0, Properties(session_expiry_interval=60)))
    assert isinstance(close, Close) and close.code == R.PROTOCOL_ERROR  # [MQTT-3.14.2-2]


def test_disconnect_can_end_a_session_now() -> None:
    session = session_in(State.CONNECTED, 5, persistent=True)
    session.receive(Disconnect(0, Properties(session_expiry_interval=0)))
    assert session.expire_now


@pytest.mark.parametrize(
    "auth",
    [
        Auth(R.RE_AUTHENTICATE, Properties(authentication_method="OTHER")),  # [MQTT-4.12.1-1]
        Auth(R.SUCCESS, Properties(authentication_method="JWT")),
    ],
)
def test_bad_auth_is_a_protocol_error(auth: Auth) -> None:
    close = session_in(State.CONNECTED, 5).receive(auth)
    assert isinstance(close, Close) and close.code == R.PROTOCOL_ERROR


def test_reauthenticated() -> None:
    session = session_in(State.CONNECTED, 5)
    assert session.reauthenticated() == Send(encode5(Auth(R.SUCCESS, Properties(authentication_method="JWT"))))


def test_malformed_bytes_close_with_the_decoders_code() -> None:
    session = session_in(State.CONNECTED, 5)
    close = session.malformed("bad", R.MALFORMED_PACKET)
    assert close == Close("protocol error: bad", R.MALFORMED_PACKET, True)
    assert session.state is State.CLOSED
