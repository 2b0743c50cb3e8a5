"""The MQTT edge of the gateway's error hierarchy: one table from errors to reactions.

MQTT 3.1.1 has few ways to say no, so each ``FlowGateError`` maps to one of:

==================  ==================  ==========================  ==========================
error               at CONNECT          on PUBLISH                  on SUBSCRIBE (per filter)
==================  ==================  ==========================  ==========================
Unauthorized        CONNACK 4           close                       0x80
Forbidden           CONNACK 5           acknowledge, drop, count    0x80
PaymentRequired     CONNACK 5           close                       0x80
RateLimited         CONNACK 3           pause reading, then retry   0x80
InvalidName         CONNACK 2 / close   close (protocol error)      0x80
PayloadTooLarge     close               close                       0x80
Unavailable         CONNACK 3           close (client re-sends)     0x80
anything else       CONNACK 3           close                       0x80
==================  ==================  ==========================  ==========================

A QoS 1/2 publish is acknowledged only after JetStream stored it, so closing
the connection on a failure makes the client re-send it after reconnecting
[MQTT-4.4.0-1]; a refused (forbidden) publish is acknowledged so the client
does not re-send it forever, and is counted in ``flowgate_messages_rejected``.

MQTT 5 clients get reason codes instead (``v5.py``: ``connack_reason``,
``publish_reason``, ``suback_reason``): a refused publish is acknowledged with
0x87 or 0x97, a rate-limited one ends the connection with DISCONNECT 0x96.
"""

from __future__ import annotations

from enum import Enum

from gateway.errors import (
    FlowGateError,
    Forbidden,
    PaymentRequired,
    RateLimited,
    Unauthorized,
)
from protocols.mqtt.packets import (
    CONNACK_BAD_CREDENTIALS,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_SERVER_UNAVAILABLE,
)

DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0


class PublishReaction(Enum):
    DROP_AND_ACK = "drop_and_ack"
    RETRY_LATER = "retry_later"
    CLOSE = "close"


def connack_code(error: FlowGateError) -> int:
    """The CONNACK return code for a failure while accepting a connection."""
    if isinstance(error, Unauthorized):
        return CONNACK_BAD_CREDENTIALS
    if isinstance(error, Forbidden | PaymentRequired):
        return CONNACK_NOT_AUTHORIZED
    return CONNACK_SERVER_UNAVAILABLE


def publish_reaction(error: FlowGateError) -> PublishReaction:
    if isinstance(error, Forbidden):
        return PublishReaction.DROP_AND_ACK
    if isinstance(error, RateLimited):
        return PublishReaction.RETRY_LATER
    return PublishReaction.CLOSE


def retry_after(error: FlowGateError) -> float:
    """Seconds to stop reading from a rate-limited client."""
    raw = error.details.get("retry_after")
    try:
        value = float(raw) if raw is not None else DEFAULT_RETRY_AFTER
    except (TypeError, ValueError):
        value = DEFAULT_RETRY_AFTER
    return min(max(value, 0.01), MAX_RETRY_AFTER)


def reject_reason(error: FlowGateError) -> str:
    """The ``reason`` label of ``flowgate_messages_rejected``."""
    return error.code
