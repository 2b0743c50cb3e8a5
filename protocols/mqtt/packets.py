"""MQTT 3.1.1 control packets as value objects (frozen but PUBLISH, see its docstring), one class per packet type.

This module owns the packet vocabulary shared by the codec (``codec.py``), the
session engine and the test clients. It holds no behaviour: validation of what
may appear on the wire lives in the codec, protocol rules in the session layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.mqtt.properties import NO_PROPERTIES, Properties

__all__ = [
    "CONNACK_ACCEPTED",
    "CONNACK_BAD_CREDENTIALS",
    "CONNACK_IDENTIFIER_REJECTED",
    "CONNACK_NOT_AUTHORIZED",
    "CONNACK_SERVER_UNAVAILABLE",
    "CONNACK_UNACCEPTABLE_PROTOCOL",
    "SUBACK_FAILURE",
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]

# CONNACK return codes [MQTT-3.2.3].
CONNACK_ACCEPTED = 0
CONNACK_UNACCEPTABLE_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5

# SUBACK return code for a refused filter [MQTT-3.9.3].
SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class Will:
    """The will message carried by CONNECT [MQTT-3.1.2.5]."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES  # MQTT 5 Will Properties


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (type 1), client to server. Decoded for any protocol name/level."""

    client_id: str
    clean_session: bool
    keepalive: int
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    protocol_name: str = "MQTT"
    protocol_level: int = 4
    properties: Properties = NO_PROPERTIES  # MQTT 5 only, as for every ``properties`` below


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK (type 2): 0 accepted, 1 bad protocol level, 2 identifier rejected,
    3 unavailable, 4 bad user name or password, 5 not authorised."""

    session_present: bool
    return_code: int  # MQTT 5: the reason code
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Publish:
    """PUBLISH (type 3), both directions; ``packet_id`` is set exactly when ``qos`` > 0.

    ``raw``: the packet's own bytes, when the decoder had them at hand (a short
    packet in one piece), so that a QoS 0 message can be forwarded as received.

    Treat as immutable, as every packet: it is not frozen because the decoders build one per message
    each way, and a frozen one costs about a quarter more to decode (its slots set through descriptors).
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    raw: bytes | None = field(default=None, compare=False, repr=False)
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK (type 4): QoS 1 acknowledgement."""

    packet_id: int
    reason_code: int = 0  # MQTT 5
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    """PUBREC (type 5): QoS 2, part 1."""

    packet_id: int
    reason_code: int = 0  # MQTT 5
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    """PUBREL (type 6): QoS 2, part 2."""

    packet_id: int
    reason_code: int = 0  # MQTT 5
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    """PUBCOMP (type 7): QoS 2, part 3."""

    packet_id: int
    reason_code: int = 0  # MQTT 5
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (type 8): ``topics`` is ((filter, requested qos), ...), at least one."""

    packet_id: int
    topics: tuple[tuple[str, int], ...]
    properties: Properties = NO_PROPERTIES
    options: tuple[int, ...] = ()  # MQTT 5: each filter's whole subscription options byte [3.8.3.1]


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK (type 9): one return code per filter: granted qos 0, 1, 2 or 0x80 failure."""

    packet_id: int
    return_codes: tuple[int, ...]  # MQTT 5: the reason codes
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (type 10): at least one topic filter."""

    packet_id: int
    topics: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK (type 11); MQTT 5 adds one reason code per filter."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ (type 12)."""


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP (type 13)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (type 14), client to server (MQTT 5: either way, with a reason code)."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (type 15, MQTT 5 only): 0x00 success, 0x18 continue, 0x19 re-authenticate."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
