"""MqttSession's redelivery and will rules, as tables, without sockets or an event loop (session.py, flow.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocols.mqtt.actions import Close, PublishWill
from protocols.mqtt.packets import Connect, Disconnect, Will
from protocols.mqtt.properties import NO_PROPERTIES, Properties, ReasonCode
from protocols.mqtt.session import MqttSession, State
from tests.test_mqtt_session_table import TOKEN, connect, session_in

R = ReasonCode
NEVER = 0xFFFFFFFF  # MQTT 5: a session that does not expire [3.1.2.11.2]

# -- redelivery: a persistent session's stored message, the first time or again ---------------------------


@pytest.mark.parametrize(
    ("publish_qos", "granted_qos", "seq", "redelivered", "expected"),
    [
        # QoS 0 has no identifier and never DUP [MQTT-3.3.1-2], even when the stream redelivers it.
        (0, 2, 5, False, (0, False, None)),
        (0, 1, 5, True, (0, False, None)),
        (2, 0, 5, True, (0, False, None)),  # the lower of the two QoS [MQTT-3.8.4-6]
        # QoS 1/2: the identifier comes from the sequence; sent again, DUP 1 [MQTT-3.3.1-1].
        (1, 1, 5, False, (1, False, 5)),
        (1, 2, 5, True, (1, True, 5)),
        (2, 1, 7, True, (1, True, 7)),
        (2, 2, 7, False, (2, False, 7)),
        (2, 2, 7, True, (2, True, 7)),
        # Identifiers are 1..65535 [MQTT-2.3.1-1]: the sequence wraps past 65535, never to 0.
        (1, 1, 65535, False, (1, False, 65535)),
        (1, 1, 65536, True, (1, True, 1)),
        (2, 2, 65537, False, (2, False, 2)),
        (2, 2, 2 * 65535 + 3, True, (2, True, 3)),
    ],
)
@pytest.mark.parametrize("level", [4, 5])
def test_redelivery(
    level: int,
    publish_qos: int,
    granted_qos: int,
    seq: int,
    redelivered: bool,
    expected: tuple[int, bool, int | None],
) -> None:
    session = session_in(State.CONNECTED, level, persistent=True)
    assert session.redelivery(publish_qos, granted_qos, seq, redelivered) == expected


@pytest.mark.parametrize("qos", [1, 2])
def test_a_message_sent_again_keeps_its_identifier(qos: int) -> None:
    """After a reconnect (or on another replica) the client sees the identifier it had [MQTT-4.4.0-1]."""
    session = session_in(State.CONNECTED, 4, persistent=True)
    _, first_dup, first_id = session.redelivery(qos, 2, 70000, False)
    _, again_dup, again_id = session.redelivery(qos, 2, 70000, True)
    assert (first_dup, again_dup) == (False, True)
    assert first_id == again_id == 70000 - 65535


# -- the will: whether it goes out when the connection closes, and when ------------------------------------


def with_will(level: int, *, delay: int | None = None, expiry: int = 0, will: bool = True) -> MqttSession:
    """A session whose CONNECT (with a will unless ``will`` is false) was accepted."""
    if level == 5:
        last = Will("wills/dev", b"gone", 1, False, Properties(will_delay_interval=delay))
        props = Properties(session_expiry_interval=expiry, authentication_method="JWT", authentication_data=TOKEN)
        hello = connect(5, clean_session=expiry == 0, properties=props, will=last if will else None)
    else:
        last = Will("wills/dev", b"gone", 1, False, NO_PROPERTIES)
        hello = connect(4, will=last if will else None)
    session = MqttSession(window=4, max_packet_size=1 << 20)
    session.receive(hello)
    session.accepted(False, None, 0.0)
    return session


def closed_by(result: object) -> bool:
    """The will flag of the ``Close`` the session asked for."""
    assert isinstance(result, Close), result
    return result.will


# How the connection ends -> the will flag it closes with: the session's own ``Close``, or the server's
# (``MqttConnection.abort``'s cause, its row in ``close_causes.CLOSES``; every cause: test_mqtt_close_causes.py).


def clean_disconnect(session: MqttSession) -> bool:
    return closed_by(session.receive(Disconnect()))


def disconnect_with_will(session: MqttSession) -> bool:
    return closed_by(session.receive(Disconnect(R.DISCONNECT_WITH_WILL)))


def network_lost(session: MqttSession) -> bool:
    return True  # the reader saw the socket close: nothing discarded the will


def protocol_error(session: MqttSession) -> bool:
    return closed_by(session.receive(connect(4)))  # a second CONNECT [MQTT-3.1.0-2]


def malformed(session: MqttSession) -> bool:
    return closed_by(session.malformed("bad remaining length", R.MALFORMED_PACKET))


def keepalive_timeout(session: MqttSession) -> bool:
    return closed_by(session.keepalive_due(1000.0, 0.0))


def taken_over(session: MqttSession) -> bool:
    return True  # abort(CloseCause.TAKEN_OVER, ...): will, DISCONNECT 0x8E


def shutting_down(session: MqttSession) -> bool:
    return False  # abort(CloseCause.SHUTTING_DOWN, ...): no will, DISCONNECT 0x8B, as for a revoked token


Ending = Callable[[MqttSession], bool]
GONE = "wills/dev"


@pytest.mark.parametrize(
    ("level", "ending", "delay", "expiry", "expected"),
    [
        # A normal DISCONNECT deletes the will [MQTT-3.1.2-10]; MQTT 5's 0x04 keeps it [3.14.2.1].
        (4, clean_disconnect, None, 0, None),
        (5, clean_disconnect, None, 0, None),
        (5, clean_disconnect, 30, 60, None),
        (5, disconnect_with_will, None, 0, 0.0),
        (5, disconnect_with_will, 30, 60, 30.0),
        # Any other end publishes it [MQTT-3.1.2-8]: a lost network, a protocol error, a silent client...
        (4, network_lost, None, 0, 0.0),
        (5, network_lost, None, 0, 0.0),
        (4, protocol_error, None, 0, 0.0),
        (5, protocol_error, None, 0, 0.0),
        (4, malformed, None, 0, 0.0),
        (5, malformed, 10, 60, 10.0),
        (4, keepalive_timeout, None, 0, 0.0),  # [MQTT-3.1.2-24]
        (5, keepalive_timeout, None, 0, 0.0),
        # ... a session taken over by a new connection (its DISCONNECT 0x8E [MQTT-3.1.4-3]).
        (4, taken_over, None, 0, 0.0),
        (5, taken_over, 5, 60, 5.0),
        # The server's own closes that discard the will (shutting down, a revoked token).
        (4, shutting_down, None, 0, None),
        (5, shutting_down, 30, 60, None),
        # The Will Delay Interval, cut short by the session's end [MQTT-3.1.3-9, 3.1.3.2.2].
        (5, network_lost, 30, 60, 30.0),
        (5, network_lost, 30, 10, 10.0),
        (5, network_lost, 30, 0, 0.0),  # the session ends with the connection: at once
        (5, network_lost, 0, 60, 0.0),
        (5, network_lost, 30, NEVER, 30.0),
    ],
)
def test_will_on_close(level: int, ending: Ending, delay: int | None, expiry: int, expected: float | None) -> None:
    session = with_will(level, delay=delay, expiry=expiry)
    will = session.ended(ending(session))
    assert session.state is State.CLOSED
    if expected is None:
        assert will is None
    else:
        assert isinstance(will, PublishWill)
        assert (will.will.topic, will.will.payload, will.delay) == (GONE, b"gone", expected)


@pytest.mark.parametrize("level", [4, 5])
def test_a_deleted_will_stays_deleted(level: int) -> None:
    """After a normal DISCONNECT no later close brings the will back [MQTT-3.1.2-10]."""
    session = with_will(level)
    session.receive(Disconnect())
    assert session.will is None
    assert session.ended(True) is None


def test_disconnect_that_ends_the_session_sends_the_will_at_once() -> None:
    """DISCONNECT 0x04 setting the Session Expiry Interval to 0: the session ends now, so does the delay."""
    session = with_will(5, delay=30, expiry=60)
    close = session.receive(Disconnect(R.DISCONNECT_WITH_WILL, Properties(session_expiry_interval=0)))
    assert session.ended(closed_by(close)) == PublishWill(
        Will(GONE, b"gone", 1, False, Properties(will_delay_interval=30)), 0.0
    )


def test_disconnect_that_shortens_the_session_shortens_the_delay() -> None:
    session = with_will(5, delay=30, expiry=60)
    close = session.receive(Disconnect(R.DISCONNECT_WITH_WILL, Properties(session_expiry_interval=5)))
    will = session.ended(closed_by(close))
    assert will is not None and will.delay == 5.0


@pytest.mark.parametrize("level", [4, 5])
def test_no_will_without_one_in_connect(level: int) -> None:
    session = with_will(level, will=False)
    assert session.ended(True) is None


def never_accepted(hello: Connect) -> MqttSession:
    session = MqttSession(window=4, max_packet_size=1 << 20)
    session.receive(hello)
    return session


@pytest.mark.parametrize("level", [4, 5])
def test_no_will_before_the_connect_was_accepted(level: int) -> None:
    """A CONNECT refused, or closed while its token is checked: no session, so no will."""
    last = Will(GONE, b"gone", 0, False)
    refused = never_accepted(connect(level, will=last))
    assert refused.state is State.CONNECTING
    _, close = refused.refused(5, "not authorised")
    assert not close.will
    assert refused.ended(True) is None  # e.g. the connect timeout, or a takeover, while CONNECTING
    foreign = never_accepted(connect(level, will=last, protocol_name="MQTX"))
    assert foreign.state is State.CLOSED
    assert foreign.ended(True) is None
