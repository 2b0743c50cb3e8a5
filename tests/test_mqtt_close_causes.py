"""Why a connection closes -> the will and MQTT 5's DISCONNECT, as tables, without sockets or an event loop
(close_causes.py, with MqttSession's will rules in session.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.errors import Unavailable
from protocols.mqtt.actions import Close, PublishWill
from protocols.mqtt.close_causes import CLOSES, CloseCause, closing
from protocols.mqtt.packets import Auth, Disconnect, Publish, Will
from protocols.mqtt.properties import Properties, ReasonCode
from protocols.mqtt.session import MqttSession, State
from protocols.mqtt.v5 import RECEIVE_MAXIMUM
from tests.test_mqtt_session_rules import with_will
from tests.test_mqtt_session_table import connect, session_in

R = ReasonCode
C = CloseCause

# Each cause -> (will published, MQTT 5 DISCONNECT reason code or None), as the call sites decided before the
# table: ``abort``/``_fail``'s ``will=`` and ``code=``, the session's ``close``.
EXPECTED: dict[CloseCause, tuple[bool, int | None]] = {
    C.CLIENT_DISCONNECT: (False, None),  # [MQTT-3.1.2-10, 3.14.4-3]
    C.CLIENT_DISCONNECT_WITH_WILL: (True, None),  # [3.14.2.1]
    C.CONNECTION_LOST: (True, None),  # [MQTT-3.1.2-8]
    C.PROTOCOL_ERROR: (True, R.PROTOCOL_ERROR),  # 3.1.2.5, 4.13
    C.MALFORMED: (True, R.MALFORMED_PACKET),
    C.RECEIVE_MAXIMUM_EXCEEDED: (True, R.RECEIVE_MAXIMUM_EXCEEDED),
    C.KEEPALIVE_TIMEOUT: (True, R.KEEP_ALIVE_TIMEOUT),  # [MQTT-3.1.2-24]
    C.NOT_STORED: (True, R.UNSPECIFIED_ERROR),
    C.FOREIGN_PROTOCOL: (False, R.UNSPECIFIED_ERROR),  # no session, no DISCONNECT sent [MQTT-3.14.0-1]
    C.CONNECT_REFUSED: (False, R.UNSPECIFIED_ERROR),
    C.CONNECT_TIMEOUT: (False, R.UNSPECIFIED_ERROR),
    C.WILL_TOPIC_INVALID: (False, R.UNSPECIFIED_ERROR),
    C.PUBLISH_FAILED: (True, R.UNSPECIFIED_ERROR),
    C.PUBLISH_RATE_TOO_HIGH: (True, R.MESSAGE_RATE_TOO_HIGH),
    C.PUBLISH_TOO_LARGE: (True, R.PACKET_TOO_LARGE),
    C.REAUTH_FAILED: (True, R.NOT_AUTHORIZED),
    C.TOKEN_EXPIRED: (True, R.MAXIMUM_CONNECT_TIME),
    C.REVOKED: (False, R.NOT_AUTHORIZED),  # the gateway's choice
    C.DISABLED: (False, R.ADMINISTRATIVE_ACTION),  # the gateway's choice
    C.SLOW_CONSUMER: (True, R.QUOTA_EXCEEDED),
    C.BUS_LOST: (True, R.SERVER_BUSY),
    C.GATEWAY_ERROR: (True, None),
    C.TAKEN_OVER: (True, R.SESSION_TAKEN_OVER),  # [MQTT-3.1.4-3]; resumed in time: no will (MqttContext)
    C.TAKEN_OVER_ELSEWHERE: (True, R.SESSION_TAKEN_OVER),
    C.SHUTTING_DOWN: (False, R.SERVER_SHUTTING_DOWN),  # the gateway's choice
}


def test_every_cause_has_one_row() -> None:
    assert set(CLOSES) == set(CloseCause) == set(EXPECTED)


@pytest.mark.parametrize("cause", list(CloseCause))
def test_the_table(cause: CloseCause) -> None:
    rule = CLOSES[cause]
    assert (rule.will, rule.code) == EXPECTED[cause]
    assert closing(cause, "why") == Close("why", rule.code, rule.will)
    # each row says why: a clause of the specification, or that it is the gateway's own choice
    assert "[" in rule.clause or "(3." in rule.clause or "gateway's choice" in rule.clause


@pytest.mark.parametrize("cause", list(CloseCause))
def test_only_a_malformed_packet_closes_with_the_errors_code(cause: CloseCause) -> None:
    close = closing(cause, "why", R.TOPIC_ALIAS_INVALID)
    assert close.code == (R.TOPIC_ALIAS_INVALID if cause is C.MALFORMED else EXPECTED[cause][1])


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("cause", list(CloseCause))
def test_the_will_after_each_cause(cause: CloseCause, level: int) -> None:
    """The cause's will flag through ``MqttSession.ended``: published (at once, or after the Will Delay
    Interval capped by the session's expiry [MQTT-3.1.3-9]) or not at all."""
    session = with_will(level, delay=30, expiry=60)
    will = session.ended(closing(cause, "why").will)
    if EXPECTED[cause][0]:
        assert isinstance(will, PublishWill)
        assert will.delay == (30.0 if level == 5 else 0.0)
    else:
        assert will is None


# -- the session's own closes carry their cause's row ---------------------------------------------------------


def violation(session: MqttSession) -> object:
    return session.receive(connect(4))  # a second CONNECT [MQTT-3.1.0-2]


def malformed(session: MqttSession) -> object:
    return session.malformed("bad remaining length", R.MALFORMED_PACKET)


def bad_auth(session: MqttSession) -> object:
    return session.receive(Auth(R.SUCCESS, Properties(authentication_method="JWT")))  # not a re-authentication


def disconnect_keeping_a_session_that_ends(session: MqttSession) -> object:
    return session.receive(Disconnect(0, Properties(session_expiry_interval=60)))  # [MQTT-3.14.2-2]


def keepalive(session: MqttSession) -> object:
    return session.keepalive_due(1000.0, 0.0)


def too_many_unacknowledged(session: MqttSession) -> object:
    results = [session.published(Publish("a", b"x", 1, packet_id=i), None) for i in range(1, RECEIVE_MAXIMUM + 2)]
    return results[-1]


def not_stored(session: MqttSession) -> object:
    publish = Publish("a", b"1", 1, packet_id=1)
    pending = session.pending(publish)
    assert pending is not None
    session.published(publish, pending)
    pending(None, Unavailable("down"))
    return session.drain_acks([])


def disconnect(session: MqttSession) -> object:
    return session.receive(Disconnect())


def disconnect_with_will(session: MqttSession) -> object:
    return session.receive(Disconnect(R.DISCONNECT_WITH_WILL))


def refused(session: MqttSession) -> object:
    return session.refused(5, "not authorised")


def the_close(result: object) -> Close:
    """The one ``Close`` among what the session asked for."""
    found = [a for a in (result if isinstance(result, list | tuple) else [result]) if isinstance(a, Close)]
    assert len(found) == 1, result
    return found[0]


SessionEnding = Callable[[MqttSession], object]


@pytest.mark.parametrize(
    ("level", "ending", "cause"),
    [
        (4, violation, C.PROTOCOL_ERROR),
        (5, violation, C.PROTOCOL_ERROR),
        (4, malformed, C.MALFORMED),
        (5, malformed, C.MALFORMED),
        (5, bad_auth, C.PROTOCOL_ERROR),
        (5, disconnect_keeping_a_session_that_ends, C.PROTOCOL_ERROR),
        (4, keepalive, C.KEEPALIVE_TIMEOUT),
        (5, keepalive, C.KEEPALIVE_TIMEOUT),
        (5, too_many_unacknowledged, C.RECEIVE_MAXIMUM_EXCEEDED),
        (4, not_stored, C.NOT_STORED),
        (5, not_stored, C.NOT_STORED),
        (4, disconnect, C.CLIENT_DISCONNECT),
        (5, disconnect, C.CLIENT_DISCONNECT),
        (5, disconnect_with_will, C.CLIENT_DISCONNECT_WITH_WILL),
    ],
)
def test_the_sessions_closes(level: int, ending: SessionEnding, cause: CloseCause) -> None:
    session = session_in(State.CONNECTED, level)
    close = the_close(ending(session))
    assert (close.will, close.code) == EXPECTED[cause]
    assert session.state is State.CLOSED


@pytest.mark.parametrize("level", [4, 5])
def test_the_sessions_closes_before_connack(level: int) -> None:
    session = MqttSession(window=4, max_packet_size=1024)
    session.receive(connect(level, will=Will("w", b"", 0, False)))
    close = the_close(refused(session))
    assert (close.will, close.code) == EXPECTED[C.CONNECT_REFUSED]
    foreign = MqttSession(window=4, max_packet_size=1024)
    close = the_close(foreign.receive(connect(level, protocol_name="HTTP")))
    assert (close.will, close.code) == EXPECTED[C.FOREIGN_PROTOCOL]
