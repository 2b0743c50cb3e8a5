"""MQTT 5.0 properties and reason codes: one table, sans-I/O encode and decode.

Every property of the OASIS MQTT 5.0 standard (section 2.2.2.2) is a row of
``PROPERTY_TABLE``: its identifier, the ``Properties`` field it fills, its data
type (byte, two-byte, four-byte, variable byte integer, UTF-8 string, string
pair, binary data) and the packets it may appear in. ``decode_properties``
rejects, with the reason code the spec names:

- a property length or value that runs past its end, a string that is not
  well-formed UTF-8 or contains U+0000 [MQTT-1.5.4-1, 1.5.4-2], an unknown
  identifier, or an identifier not valid for the packet: Malformed Packet
  (0x81, section 2.2.2.2);
- a property given twice (only User Property, and Subscription Identifier in
  PUBLISH, may repeat) or a value out of its range (Receive Maximum 0
  [3.1.2.11.3], Maximum Packet Size 0 [3.1.2.11.4], Subscription Identifier 0
  [3.8.2.1.2], a 0/1 flag with another value): Protocol Error (0x82).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NO_PROPERTIES",
    "PROPERTY_TABLE",
    "WILL",
    "Properties",
    "PropertyError",
    "ReasonCode",
    "decode_properties",
    "decode_varint",
    "encode_properties",
    "encode_varint",
]

# Packet types (section 2.1.2) and a pseudo type for the Will Properties of CONNECT (3.1.3.2).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = 8, 9, 10, 11, 14, 15
WILL: Final = 16

MAX_VARINT: Final = 268_435_455


class ReasonCode:
    """MQTT 5.0 reason codes (section 2.4) the gateway sends or checks."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class PropertyError(ValueError):
    """A property block broke the spec; ``reason_code`` is what to answer with (0x81 or 0x82)."""

    def __init__(self, reason: str, reason_code: int = ReasonCode.MALFORMED_PACKET) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class Properties:
    """The properties of one packet; ``None`` (or empty) means absent."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __bool__(self) -> bool:
        return self != NO_PROPERTIES


NO_PROPERTIES: Final = Properties()

# Data types (section 1.5).
BYTE, TWO, FOUR, VARINT, UTF8, PAIR, BINARY = "byte", "two", "four", "varint", "utf8", "pair", "binary"

_ALL_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP})
_MESSAGE = frozenset({PUBLISH, WILL})


@dataclass(frozen=True, slots=True)
class PropertySpec:
    identifier: int
    field: str
    kind: str
    packets: frozenset[int]
    repeatable: bool = False
    flag: bool = False  # a 0/1 value
    nonzero: bool = False  # 0 is a protocol error


PROPERTY_TABLE: Final[tuple[PropertySpec, ...]] = (
    PropertySpec(0x01, "payload_format_indicator", BYTE, _MESSAGE, flag=True),
    PropertySpec(0x02, "message_expiry_interval", FOUR, _MESSAGE),
    PropertySpec(0x03, "content_type", UTF8, _MESSAGE),
    PropertySpec(0x08, "response_topic", UTF8, _MESSAGE),
    PropertySpec(0x09, "correlation_data", BINARY, _MESSAGE),
    PropertySpec(0x0B, "subscription_identifiers", VARINT, frozenset({PUBLISH, SUBSCRIBE}), True, nonzero=True),
    PropertySpec(0x11, "session_expiry_interval", FOUR, frozenset({CONNECT, CONNACK, DISCONNECT})),
    PropertySpec(0x12, "assigned_client_identifier", UTF8, frozenset({CONNACK})),
    PropertySpec(0x13, "server_keep_alive", TWO, frozenset({CONNACK})),
    PropertySpec(0x15, "authentication_method", UTF8, frozenset({CONNECT, CONNACK, AUTH})),
    PropertySpec(0x16, "authentication_data", BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    PropertySpec(0x17, "request_problem_information", BYTE, frozenset({CONNECT}), flag=True),
    PropertySpec(0x18, "will_delay_interval", FOUR, frozenset({WILL})),
    PropertySpec(0x19, "request_response_information", BYTE, frozenset({CONNECT}), flag=True),
    PropertySpec(0x1A, "response_information", UTF8, frozenset({CONNACK})),
    PropertySpec(0x1C, "server_reference", UTF8, frozenset({CONNACK, DISCONNECT})),
    PropertySpec(
        0x1F,
        "reason_string",
        UTF8,
        frozenset({CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH}) | _ALL_ACKS,
    ),
    PropertySpec(0x21, "receive_maximum", TWO, frozenset({CONNECT, CONNACK}), nonzero=True),
    PropertySpec(0x22, "topic_alias_maximum", TWO, frozenset({CONNECT, CONNACK})),
    PropertySpec(0x23, "topic_alias", TWO, frozenset({PUBLISH})),
    PropertySpec(0x24, "maximum_qos", BYTE, frozenset({CONNACK}), flag=True),
    PropertySpec(0x25, "retain_available", BYTE, frozenset({CONNACK}), flag=True),
    PropertySpec(
        0x26,
        "user_properties",
        PAIR,
        frozenset({CONNECT, CONNACK, PUBLISH, WILL, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH})
        | _ALL_ACKS,
        True,
    ),
    PropertySpec(0x27, "maximum_packet_size", FOUR, frozenset({CONNECT, CONNACK}), nonzero=True),
    PropertySpec(0x28, "wildcard_subscription_available", BYTE, frozenset({CONNACK}), flag=True),
    PropertySpec(0x29, "subscription_identifier_available", BYTE, frozenset({CONNACK}), flag=True),
    PropertySpec(0x2A, "shared_subscription_available", BYTE, frozenset({CONNACK}), flag=True),
)
_BY_ID: Final = {spec.identifier: spec for spec in PROPERTY_TABLE}
_BY_FIELD: Final = {spec.field: spec for spec in PROPERTY_TABLE}
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


# -- variable byte integers (section 1.5.5) ---------------------------------------------------


def encode_varint(value: int) -> bytes:
    """A Variable Byte Integer [MQTT-1.5.5]: remaining lengths, property lengths and varint properties."""
    if 0 <= value < 0x80:  # the common case first: most packets and properties are short
        return bytes((value,))
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def decode_varint(buf: bytes, pos: int, end: int, what: str = "variable byte integer") -> tuple[int, int]:
    """(value, position after it); at most four bytes [MQTT-1.5.5-1]."""
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            raise PropertyError(f"{what} runs past the end of the packet")
        digit = buf[pos + i]
        value |= (digit & 0x7F) << shift
        if digit < 0x80:
            if i and digit == 0:
                raise PropertyError(f"{what} is not encoded in the minimum number of bytes [MQTT-1.5.5-1]")
            return value, pos + i + 1
        shift += 7
    raise PropertyError(f"{what} longer than four bytes [MQTT-1.5.5-1]")


# -- encoding ---------------------------------------------------------------------------------


def _string(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _binary(value: bytes, what: str) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(value)) + value


def _encode_value(spec: PropertySpec, value: object) -> bytes:
    head = bytes((spec.identifier,))
    kind = spec.kind
    if kind == BYTE:
        assert isinstance(value, int)
        return head + bytes((value,))
    if kind == TWO:
        assert isinstance(value, int)
        return head + _U16.pack(value)
    if kind == FOUR:
        assert isinstance(value, int)
        return head + _U32.pack(value)
    if kind == VARINT:
        assert isinstance(value, int)
        return head + encode_varint(value)
    if kind == UTF8:
        assert isinstance(value, str)
        return head + _string(value, spec.field)
    if kind == BINARY:
        assert isinstance(value, bytes)
        return head + _binary(value, spec.field)
    assert isinstance(value, tuple)
    return head + _string(value[0], "user property name") + _string(value[1], "user property value")


def encode_properties(props: Properties, packet_type: int | None = None) -> bytes:
    """The property length (variable byte integer) followed by the properties, in identifier order.

    With ``packet_type``, a property not allowed in that packet raises ``ValueError``.
    """
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for spec in PROPERTY_TABLE:
        value = getattr(props, spec.field)
        if value is None or value == ():
            continue
        if packet_type is not None and packet_type not in spec.packets:
            raise ValueError(f"property {spec.field} is not allowed in packet type {packet_type}")
        if spec.repeatable:
            parts.extend(_encode_value(spec, item) for item in value)
        else:
            parts.append(_encode_value(spec, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


# -- decoding ---------------------------------------------------------------------------------


def _read_text(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    if pos + 2 > end:
        raise PropertyError(f"{what}: length runs past the property length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise PropertyError(f"{what}: declared length runs past the property length")
    try:
        text = buf[pos + 2 : stop].decode("utf-8")
    except UnicodeDecodeError:
        raise PropertyError(f"{what} is not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise PropertyError(f"{what} contains U+0000 [MQTT-1.5.4-2]")
    return text, stop


def decode_properties(buf: bytes, pos: int, end: int, packet_type: int) -> tuple[Properties, int]:
    """The properties starting at ``pos`` (property length first) and the position after them.

    Raises ``PropertyError`` with reason code 0x81 (malformed) or 0x82 (protocol error).
    """
    length, pos = decode_varint(buf, pos, end, "property length")
    stop = pos + length
    if stop > end:
        raise PropertyError("property length runs past the remaining length")
    if length == 0:
        return NO_PROPERTIES, stop
    values: dict[str, object] = {}
    while pos < stop:
        identifier, pos = decode_varint(buf, pos, stop, "property identifier")
        spec = _BY_ID.get(identifier)
        if spec is None:
            raise PropertyError(f"unknown property identifier 0x{identifier:02x} [2.2.2.2]")
        if packet_type not in spec.packets:
            raise PropertyError(f"property {spec.field} (0x{identifier:02x}) is not valid in this packet [2.2.2.2]")
        kind = spec.kind
        value: object
        if kind == BYTE:
            if pos + 1 > stop:
                raise PropertyError(f"{spec.field}: value runs past the property length")
            value = buf[pos]
            pos += 1
        elif kind == TWO:
            if pos + 2 > stop:
                raise PropertyError(f"{spec.field}: value runs past the property length")
            value = buf[pos] << 8 | buf[pos + 1]
            pos += 2
        elif kind == FOUR:
            if pos + 4 > stop:
                raise PropertyError(f"{spec.field}: value runs past the property length")
            value = _U32.unpack_from(buf, pos)[0]
            pos += 4
        elif kind == VARINT:
            value, pos = decode_varint(buf, pos, stop, spec.field)
        elif kind == UTF8:
            value, pos = _read_text(buf, pos, stop, spec.field)
        elif kind == BINARY:
            if pos + 2 > stop:
                raise PropertyError(f"{spec.field}: length runs past the property length")
            data_end = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
            if data_end > stop:
                raise PropertyError(f"{spec.field}: declared length runs past the property length")
            value = bytes(buf[pos + 2 : data_end])
            pos = data_end
        else:
            name, pos = _read_text(buf, pos, stop, "user property name")
            text, pos = _read_text(buf, pos, stop, "user property value")
            value = (name, text)
        if spec.flag and value not in (0, 1):
            raise PropertyError(f"{spec.field} must be 0 or 1, not {value}", ReasonCode.PROTOCOL_ERROR)
        if spec.nonzero and value == 0:
            raise PropertyError(f"{spec.field} of 0 is a protocol error", ReasonCode.PROTOCOL_ERROR)
        field = spec.field
        if spec.repeatable and (field == "user_properties" or packet_type == PUBLISH):
            values[field] = (*values.get(field, ()), value)  # type: ignore[misc]
        elif field in values:
            raise PropertyError(f"property {field} given twice [2.2.2.2]", ReasonCode.PROTOCOL_ERROR)
        else:
            values[field] = (value,) if spec.repeatable else value
    return Properties(**values), stop  # type: ignore[arg-type]


def property_spec(field: str) -> PropertySpec:
    return _BY_FIELD[field]
