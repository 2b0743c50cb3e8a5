"""Why an MQTT connection ends, and one table from each cause to the will and MQTT 5's DISCONNECT.

Every close names its ``CloseCause``: the session's own (``MqttSession.close``:
a protocol error, a keepalive timeout, the client's DISCONNECT) and the
server's (``abort``/``_fail`` in the connection layers: a takeover, a slow
consumer, shutdown...). ``CLOSES`` says for each whether the will is published
and which reason code MQTT 5's DISCONNECT carries before the socket closes;
``closing`` turns a cause into the ``Close`` action. Whether there is a will at
all, and when it goes out (the Will Delay Interval, capped by the session's
expiry), stays with ``MqttSession.ended``; whether a session taken over was
resumed, with ``MqttContext``.

The rule (MQTT 5 3.1.2.5, 3.1.1 [MQTT-3.1.2-8]): the will is published when the
network connection closes without a normal DISCONNECT, which includes the
server closing it, for a protocol error too (4.13); a DISCONNECT 0x00 deletes
it [MQTT-3.1.2-10, 3.14.4-3]. The gateway departs from the letter of 3.1.2.5
in three rows, each saying why: a server shutting down and withdrawn
credentials (revoked, disabled) close without the will. A CONNECT never
accepted has no will (``MqttSession.ended``) and gets no DISCONNECT
[MQTT-3.14.0-1]: those rows keep the code they always named, never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from protocols.mqtt.actions import Close
from protocols.mqtt.properties import ReasonCode

R = ReasonCode


class CloseCause(StrEnum):
    """Why a connection ends (the value names it in logs)."""

    # the client
    CLIENT_DISCONNECT = "client_disconnect"  # DISCONNECT (MQTT 5: 0x00 and any code but 0x04)
    CLIENT_DISCONNECT_WITH_WILL = "client_disconnect_with_will"  # MQTT 5 DISCONNECT 0x04
    CONNECTION_LOST = "connection_lost"  # the peer closed the socket or the network failed
    # the session's rules (session.py)
    PROTOCOL_ERROR = "protocol_error"  # a packet the session's table or the MQTT 5 rules do not allow
    MALFORMED = "malformed"  # the decoder rejected the bytes (its reason code goes out)
    RECEIVE_MAXIMUM_EXCEEDED = "receive_maximum_exceeded"
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    NOT_STORED = "not_stored"  # a QoS 1/2 message the store refused: no acknowledgement, the client re-sends
    # CONNECT
    FOREIGN_PROTOCOL = "foreign_protocol"  # not MQTT: closed without CONNACK
    CONNECT_REFUSED = "connect_refused"  # CONNACK with an error
    CONNECT_TIMEOUT = "connect_timeout"  # no CONNECT in time
    WILL_TOPIC_INVALID = "will_topic_invalid"  # MQTT 3.1.1: closed without CONNACK (MQTT 5 refuses it)
    # the gateway's services
    PUBLISH_FAILED = "publish_failed"  # the gateway could not take a publish
    PUBLISH_RATE_TOO_HIGH = "publish_rate_too_high"  # MQTT 5 (3.1.1 pauses reading instead)
    PUBLISH_TOO_LARGE = "publish_too_large"  # MQTT 5
    REAUTH_FAILED = "reauth_failed"  # MQTT 5 AUTH with a bad token or another identity
    TOKEN_EXPIRED = "token_expired"
    REVOKED = "revoked"  # the token or key revoked, the user deleted
    DISABLED = "disabled"  # the user disabled
    SLOW_CONSUMER = "slow_consumer"
    BUS_LOST = "bus_lost"  # a QoS 1 subscriber on the hub's core tier when the bus connection dropped
    GATEWAY_ERROR = "gateway_error"  # an error from the gateway that ended the reader
    # the session moves on
    TAKEN_OVER = "taken_over"  # a new connection with the client id, on this replica
    TAKEN_OVER_ELSEWHERE = "taken_over_elsewhere"  # ... on another replica
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class CloseRule:
    """What one cause of closing does."""

    will: bool  # the will is published (if the session has one: ``MqttSession.ended`` decides when)
    code: int | None  # MQTT 5's DISCONNECT reason code; None: none is sent
    clause: str  # why the will goes out or not
    code_of_error: bool = False  # the error's own reason code replaces ``code`` (the decoder's)


_NO_DISCONNECT = "the server closed without a DISCONNECT 0x00 from the client (3.1.2.5)"
_NO_SESSION = "no CONNECT accepted, no will; no DISCONNECT before CONNACK 0x00 [MQTT-3.14.0-1]"

CLOSES: Final[Mapping[CloseCause, CloseRule]] = {
    CloseCause.CLIENT_DISCONNECT: CloseRule(False, None, "a normal DISCONNECT deletes it [MQTT-3.1.2-10, 3.14.4-3]"),
    CloseCause.CLIENT_DISCONNECT_WITH_WILL: CloseRule(True, None, "MQTT 5 DISCONNECT 0x04 keeps it [3.14.2.1]"),
    CloseCause.CONNECTION_LOST: CloseRule(True, None, "closed without DISCONNECT [MQTT-3.1.2-8] (3.1.2.5)"),
    CloseCause.PROTOCOL_ERROR: CloseRule(True, R.PROTOCOL_ERROR, f"{_NO_DISCONNECT}, protocol error (4.13)"),
    CloseCause.MALFORMED: CloseRule(True, R.MALFORMED_PACKET, f"{_NO_DISCONNECT}, malformed (4.13)", True),
    CloseCause.RECEIVE_MAXIMUM_EXCEEDED: CloseRule(
        True, R.RECEIVE_MAXIMUM_EXCEEDED, f"{_NO_DISCONNECT} [MQTT-3.3.4-8]"
    ),
    CloseCause.KEEPALIVE_TIMEOUT: CloseRule(True, R.KEEP_ALIVE_TIMEOUT, "silent past the keepalive [MQTT-3.1.2-24]"),
    CloseCause.NOT_STORED: CloseRule(True, R.UNSPECIFIED_ERROR, _NO_DISCONNECT),
    CloseCause.FOREIGN_PROTOCOL: CloseRule(False, R.UNSPECIFIED_ERROR, f"{_NO_SESSION} [MQTT-3.1.2-1]"),
    CloseCause.CONNECT_REFUSED: CloseRule(False, R.UNSPECIFIED_ERROR, f"{_NO_SESSION} [MQTT-3.2.2-7]"),
    CloseCause.CONNECT_TIMEOUT: CloseRule(False, R.UNSPECIFIED_ERROR, _NO_SESSION),
    CloseCause.WILL_TOPIC_INVALID: CloseRule(False, R.UNSPECIFIED_ERROR, _NO_SESSION),
    CloseCause.PUBLISH_FAILED: CloseRule(True, R.UNSPECIFIED_ERROR, _NO_DISCONNECT),
    CloseCause.PUBLISH_RATE_TOO_HIGH: CloseRule(True, R.MESSAGE_RATE_TOO_HIGH, _NO_DISCONNECT),
    CloseCause.PUBLISH_TOO_LARGE: CloseRule(True, R.PACKET_TOO_LARGE, _NO_DISCONNECT),
    CloseCause.REAUTH_FAILED: CloseRule(True, R.NOT_AUTHORIZED, f"{_NO_DISCONNECT} [MQTT-4.12.1-2]"),
    CloseCause.TOKEN_EXPIRED: CloseRule(True, R.MAXIMUM_CONNECT_TIME, _NO_DISCONNECT),
    CloseCause.REVOKED: CloseRule(
        False, R.NOT_AUTHORIZED, "the gateway's choice: nothing is published on withdrawn credentials"
    ),
    CloseCause.DISABLED: CloseRule(
        False, R.ADMINISTRATIVE_ACTION, "the gateway's choice: nothing is published for a disabled user"
    ),
    CloseCause.SLOW_CONSUMER: CloseRule(True, R.QUOTA_EXCEEDED, _NO_DISCONNECT),
    CloseCause.BUS_LOST: CloseRule(True, R.SERVER_BUSY, _NO_DISCONNECT),
    CloseCause.GATEWAY_ERROR: CloseRule(True, None, _NO_DISCONNECT),
    CloseCause.TAKEN_OVER: CloseRule(
        True, R.SESSION_TAKEN_OVER, "the old connection's will, as in 3.1.2.5 [MQTT-3.1.4-3] (resumed: MqttContext)"
    ),
    CloseCause.TAKEN_OVER_ELSEWHERE: CloseRule(
        True, R.SESSION_TAKEN_OVER, "as TAKEN_OVER [MQTT-3.1.4-3], the takeover announced by another replica"
    ),
    CloseCause.SHUTTING_DOWN: CloseRule(
        False,
        R.SERVER_SHUTTING_DOWN,
        "the gateway's choice: its clients reconnect to another replica, a drain does not announce them gone",
    ),
}


def closing(cause: CloseCause, reason: str, error_code: int | None = None) -> Close:
    """The ``Close`` for ``cause`` (``reason`` for the log and MQTT 5's reason string); ``error_code``: the
    reason code an error named, used where the cause's row says so (a malformed packet's)."""
    rule = CLOSES[cause]
    code = error_code if rule.code_of_error and error_code is not None else rule.code
    return Close(reason, code, rule.will)
