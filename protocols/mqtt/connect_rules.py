"""The checks of an MQTT CONNECT that need nothing but the packet (3.1.1; ``v5.check_connect5`` for MQTT 5)."""

from __future__ import annotations

from protocols.mqtt.packets import (
    CONNACK_ACCEPTED,
    CONNACK_BAD_CREDENTIALS,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_UNACCEPTABLE_PROTOCOL,
    Connect,
)

MAX_CLIENT_ID_CHARS = 256


def valid_client_id(client_id: str) -> bool:
    """Client identifiers we accept: any UTF-8 the codec let through, up to 256 characters.

    The spec only requires 1-23 of ``[0-9a-zA-Z]`` to be accepted and allows more
    [MQTT-3.1.3-5]; we take longer ids and other characters, since ids are
    hashed before they reach NATS names.
    """
    return len(client_id) <= MAX_CLIENT_ID_CHARS


KNOWN_PROTOCOL_NAMES = ("MQTT", "MQIsdp")  # 3.1.1 and its predecessor 3.1


def foreign_protocol(connect: Connect) -> bool:
    """A protocol name that is not MQTT's: close without CONNACK, as [MQTT-3.1.2-1] allows."""
    return connect.protocol_name not in KNOWN_PROTOCOL_NAMES


def check_connect(connect: Connect) -> int:
    """The CONNACK return code for ``connect`` before its token is verified (0 = go on)."""
    if connect.protocol_name != "MQTT" or connect.protocol_level != 4:
        # Unsupported protocol level: answer 1, then close [MQTT-3.1.2-2].
        return CONNACK_UNACCEPTABLE_PROTOCOL
    if not connect.client_id and not connect.clean_session:
        # A zero-byte ClientId needs CleanSession 1 [MQTT-3.1.3-7, 3.1.3-8].
        return CONNACK_IDENTIFIER_REJECTED
    if not valid_client_id(connect.client_id):
        return CONNACK_IDENTIFIER_REJECTED
    if connect.username is None or connect.username.lower() != "bearer" or not connect.password:
        return CONNACK_BAD_CREDENTIALS
    return CONNACK_ACCEPTED
