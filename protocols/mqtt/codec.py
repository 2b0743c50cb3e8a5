"""Sans-I/O MQTT 3.1.1 codec: ``encode(packet) -> bytes`` and a pull ``Decoder``.

This module owns the wire format of the 14 MQTT 3.1.1 control packets and every
rule that can be checked from the bytes of one packet. It does no I/O and reads
no clock: the caller feeds bytes (``Decoder.feed``) and pulls packets
(``Decoder.next_packet``), exactly like h11's ``receive_data``/``next_event``.

What the decoder rejects (raising ``MQTTProtocolError``; the connection is then
closed by the caller, [MQTT-4.8.0-1]):

- a remaining length longer than 4 bytes, or larger than ``max_packet_size``
  (``PacketTooLarge``), checked as soon as the fixed header is complete, before
  the body is buffered;
- packet types 0 and 15, and types that may not travel in this direction;
- reserved fixed-header flags other than the spec's [MQTT-2.2.2-1, 2.2.2-2]:
  0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0 for the others but PUBLISH;
- PUBLISH with QoS 3 [MQTT-3.3.1-4], with DUP set at QoS 0 [MQTT-3.3.1-2],
  an empty topic [MQTT-4.7.3-1] or a topic with wildcards [MQTT-3.3.2-2];
- strings that are not well-formed UTF-8 [MQTT-1.5.3-1] or contain U+0000
  [MQTT-1.5.3-2] (topic names and filters, client ids, user names, will topics);
- packet identifier 0 [MQTT-2.3.1-1];
- SUBSCRIBE/UNSUBSCRIBE without topics [MQTT-3.8.3-3, 3.10.3-2]; a requested
  QoS byte with reserved bits set or QoS 3 [MQTT-3.8.3-4];
- CONNECT flags: reserved bit set [MQTT-3.1.2-3], will QoS/retain without the
  will flag [MQTT-3.1.2-11, 3.1.2-13, 3.1.2-15], will QoS 3 [MQTT-3.1.2-14],
  password without user name [MQTT-3.1.2-22];
- any packet whose declared field lengths disagree with its remaining length.

What it leaves to the session layer: the protocol name/level (CONNECT decodes
for any, e.g. "MQIsdp"/3, so that the server can answer CONNACK 1
[MQTT-3.1.2-2]; a CONNECT of another protocol version whose payload does not
parse as 3.1.1 still decodes its variable header, with empty payload fields),
client identifier characters (CONNACK 2), the will topic's syntax, and topic
filter syntax including empty filters (SUBACK 0x80 per filter).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from gateway.errors import BadRequest
from protocols.mqtt.packets import (
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
    Will,
)
from protocols.mqtt.properties import MAX_VARINT, NO_PROPERTIES, encode_varint

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "Decoder",
    "MQTTProtocolError",
    "PacketTooLarge",
    "encode",
    "encode_publish",
]

DEFAULT_MAX_PACKET_SIZE: Final = 1024 * 1024
MAX_REMAINING_LENGTH: Final = MAX_VARINT  # four bytes of variable length encoding [MQTT-2.2.3]

# Packet type numbers [MQTT-2.2.1].
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

_NAMES: Final = (
    "reserved(0)",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved(15)",
)
_CLIENT_TO_SERVER: Final = frozenset(
    {CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT}
)
_SERVER_TO_CLIENT: Final = frozenset({CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP})
# Fixed-header flags every packet type but PUBLISH must carry [MQTT-2.2.2-1, 2.2.2-2].
_FLAGS: Final = (0, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0)

_U16: Final = struct.Struct(">H")
_B_B_H: Final = struct.Struct(">BBH")


class MQTTProtocolError(BadRequest):
    """The peer broke the MQTT 3.1.1 wire format; the connection must be closed [MQTT-4.8.0-1].

    ``reason`` is a human-readable explanation (citing the spec clause) for the log line.
    """

    code = "mqtt_protocol_error"
    reason_code = 0x81  # MQTT 5: the DISCONNECT reason code sent before closing (Malformed Packet)

    def __init__(self, reason: str, reason_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if reason_code is not None:
            self.reason_code = reason_code


class PacketTooLarge(MQTTProtocolError):
    """A packet's remaining length exceeds the configured maximum."""

    status = 413
    code = "payload_too_large"
    reason_code = 0x95


# -- encoding ---------------------------------------------------------------------------------


_length_bytes = encode_varint  # the remaining length is a Variable Byte Integer [MQTT-2.2.3]


def _str(value: str, what: str) -> bytes:
    data = value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _bin(value: bytes, what: str) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(value)) + value


def _check_id(packet_id: int | None) -> int:
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet id must be 1..65535, not {packet_id!r} [MQTT-2.3.1-1]")
    return packet_id


def _check_qos(qos: int, what: str) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"{what} must be 0, 1 or 2, not {qos!r}")


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
) -> bytes:
    """The bytes of ``encode(Publish(topic, payload, qos, retain, dup, packet_id))`` without building the packet.

    For the delivery hot path: ``topic`` may be given already UTF-8 encoded, so a
    message fanned out to many subscribers encodes its topic once. Same rules and
    ``ValueError`` as ``encode``.
    """
    if isinstance(topic, str):
        topic = topic.encode("utf-8")
    tlen = len(topic)
    if tlen > 0xFFFF:
        raise ValueError("topic is longer than 65535 bytes")
    if qos == 0:
        # DUP and the packet id do not exist at QoS 0 [MQTT-3.3.1-2, 2.3.1-5]; they are ignored.
        rlen = 2 + tlen + len(payload)
        first = 0x31 if retain else 0x30
        if rlen < 0x80:  # one struct call for the whole header
            return _B_B_H.pack(first, rlen, tlen) + topic + payload
        return b"".join((bytes((first,)), _length_bytes(rlen), _U16.pack(tlen), topic, payload))
    if qos != 1 and qos != 2:
        _check_qos(qos, "PUBLISH qos")  # raises
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        _check_id(packet_id)  # raises
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    rlen = 4 + tlen + len(payload)
    if rlen < 0x80:
        return b"".join((_B_B_H.pack(first, rlen, tlen), topic, _U16.pack(packet_id), payload))
    return b"".join((bytes((first,)), _length_bytes(rlen), _U16.pack(tlen), topic, _U16.pack(packet_id), payload))


def _encode_publish(packet: Publish) -> bytes:
    return encode_publish(packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id)


def _encode_connect(packet: Connect) -> bytes:
    if not 0 <= packet.keepalive <= 0xFFFF:
        raise ValueError("keepalive must be 0..65535")
    if not 0 <= packet.protocol_level <= 0xFF:
        raise ValueError("protocol level must be 0..255")
    flags = 0x02 if packet.clean_session else 0
    body = [_str(packet.client_id, "client id")]
    will = packet.will
    if will is not None:
        _check_qos(will.qos, "will qos")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        body.append(_str(will.topic, "will topic"))
        body.append(_bin(will.payload, "will payload"))
    if packet.username is not None:
        flags |= 0x80
        body.append(_str(packet.username, "user name"))
    if packet.password is not None:
        if packet.username is None:
            raise ValueError("a password requires a user name [MQTT-3.1.2-22]")
        flags |= 0x40
        body.append(_bin(packet.password, "password"))
    head = _str(packet.protocol_name, "protocol name") + struct.pack(
        ">BBH", packet.protocol_level, flags, packet.keepalive
    )
    rest = head + b"".join(body)
    return b"\x10" + _length_bytes(len(rest)) + rest


def _encode_connack(packet: ConnAck) -> bytes:
    if not 0 <= packet.return_code <= 0xFF:
        raise ValueError("CONNACK return code must be 0..255")
    return bytes((0x20, 2, 1 if packet.session_present else 0, packet.return_code))


def _id_only(first: int) -> Callable[[PubAck | PubRec | PubRel | PubComp | UnsubAck], bytes]:
    def encode_id_only(packet: PubAck | PubRec | PubRel | PubComp | UnsubAck) -> bytes:
        return _B_B_H.pack(first, 2, _check_id(packet.packet_id))

    return encode_id_only


def _encode_subscribe(packet: Subscribe) -> bytes:
    if not packet.topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter [MQTT-3.8.3-3]")
    parts = [_U16.pack(_check_id(packet.packet_id))]
    for topic_filter, qos in packet.topics:
        _check_qos(qos, "requested qos")
        parts.append(_str(topic_filter, "topic filter"))
        parts.append(bytes((qos,)))
    rest = b"".join(parts)
    return b"\x82" + _length_bytes(len(rest)) + rest


def _encode_suback(packet: SubAck) -> bytes:
    if not packet.return_codes:
        raise ValueError("SUBACK needs at least one return code")
    for code in packet.return_codes:
        if code not in (0, 1, 2, 0x80):
            raise ValueError(f"SUBACK return code must be 0, 1, 2 or 0x80, not {code!r} [MQTT-3.9.3-2]")
    rest = _U16.pack(_check_id(packet.packet_id)) + bytes(packet.return_codes)
    return b"\x90" + _length_bytes(len(rest)) + rest


def _encode_unsubscribe(packet: Unsubscribe) -> bytes:
    if not packet.topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter [MQTT-3.10.3-2]")
    rest = _U16.pack(_check_id(packet.packet_id)) + b"".join(_str(t, "topic filter") for t in packet.topics)
    return b"\xa2" + _length_bytes(len(rest)) + rest


_ENCODERS: Final[dict[type, Callable[..., bytes]]] = {
    Publish: _encode_publish,
    PubAck: _id_only(0x40),
    PubRec: _id_only(0x50),
    PubRel: _id_only(0x62),
    PubComp: _id_only(0x70),
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _id_only(0xB0),
    PingReq: lambda _: b"\xc0\x00",
    PingResp: lambda _: b"\xd0\x00",
    Disconnect: lambda _: b"\xe0\x00",
}


def encode(packet: Packet) -> bytes:
    """The wire bytes of ``packet``.

    Raises ``ValueError`` for a packet that cannot be encoded: a missing or
    out-of-range packet id, a QoS outside 0..2, a string longer than 65535 bytes
    or not encodable as UTF-8, a password without a user name, an empty
    SUBSCRIBE/UNSUBSCRIBE/SUBACK. For a QoS 0 PUBLISH, ``dup`` and ``packet_id``
    are ignored (they do not exist at QoS 0).
    """
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise ValueError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet)


# -- decoding ---------------------------------------------------------------------------------


def _fail(reason: str) -> MQTTProtocolError:
    return MQTTProtocolError(reason)


def _decode_text(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")  # strict: rejects overlongs, surrogates, truncations
    except UnicodeDecodeError:
        raise _fail(f"{what} is not well-formed UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in text:
        raise _fail(f"{what} contains U+0000 [MQTT-1.5.3-2]")
    return text


def _read_str(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    if pos + 2 > end:
        raise _fail(f"{what}: length field runs past the remaining length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise _fail(f"{what}: declared length runs past the remaining length")
    return _decode_text(buf[pos + 2 : stop], what), stop


def _read_bin(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise _fail(f"{what}: length field runs past the remaining length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise _fail(f"{what}: declared length runs past the remaining length")
    return buf[pos + 2 : stop], stop


def _read_id(buf: bytes, pos: int, end: int, name: str) -> int:
    if pos + 2 > end:
        raise _fail(f"{name}: too short for a packet identifier")
    packet_id = buf[pos] << 8 | buf[pos + 1]
    if packet_id == 0:
        raise _fail(f"{name}: packet identifier 0 [MQTT-2.3.1-1]")
    return packet_id


def _decode_connect(buf: bytes, pos: int, end: int, flags: int) -> Connect:
    protocol_name, pos = _read_str(buf, pos, end, "CONNECT protocol name")
    if pos + 4 > end:
        raise _fail("CONNECT: variable header truncated")
    level, cflags = buf[pos], buf[pos + 1]
    keepalive = buf[pos + 2] << 8 | buf[pos + 3]
    pos += 4
    clean = bool(cflags & 0x02)
    try:
        return _decode_connect_payload(buf, pos, end, protocol_name, level, cflags, keepalive)
    except MQTTProtocolError:
        if (protocol_name, level) in (("MQTT", 4), ("MQIsdp", 3)):
            raise
        # Another protocol version (e.g. MQTT 5 with properties): keep what the
        # session layer needs to answer CONNACK 1 [MQTT-3.1.2-2].
        return Connect("", clean, keepalive, protocol_name=protocol_name, protocol_level=level)


def _decode_connect_payload(
    buf: bytes, pos: int, end: int, protocol_name: str, level: int, cflags: int, keepalive: int
) -> Connect:
    if cflags & 0x01:
        raise _fail("CONNECT: reserved flag set [MQTT-3.1.2-3]")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if not will_flag and will_qos:
        raise _fail("CONNECT: will QoS set without the will flag [MQTT-3.1.2-11] [MQTT-3.1.2-13]")
    if not will_flag and will_retain:
        raise _fail("CONNECT: will retain set without the will flag [MQTT-3.1.2-11] [MQTT-3.1.2-15]")
    if will_qos == 3:
        raise _fail("CONNECT: will qos 3 [MQTT-3.1.2-14]")
    if cflags & 0x40 and not cflags & 0x80:
        raise _fail("CONNECT: password flag without user name flag [MQTT-3.1.2-22]")
    client_id, pos = _read_str(buf, pos, end, "client identifier")
    will = None
    if will_flag:
        will_topic, pos = _read_str(buf, pos, end, "will topic")
        will_payload, pos = _read_bin(buf, pos, end, "will message")
        will = Will(will_topic, will_payload, will_qos, will_retain)
    username = password = None
    if cflags & 0x80:
        username, pos = _read_str(buf, pos, end, "user name")
    if cflags & 0x40:
        password, pos = _read_bin(buf, pos, end, "password")
    if pos != end:
        raise _fail("CONNECT: bytes left over after the payload")
    return Connect(client_id, bool(cflags & 0x02), keepalive, username, password, will, protocol_name, level)


def _decode_connack(buf: bytes, pos: int, end: int, flags: int) -> ConnAck:
    if end - pos != 2:
        raise _fail("CONNACK: remaining length must be 2")
    ack_flags, code = buf[pos], buf[pos + 1]
    if ack_flags & 0xFE:
        raise _fail("CONNACK: reserved acknowledge flags set [MQTT-3.2.2]")
    if code > 5:
        raise _fail(f"CONNACK: reserved return code {code}")
    if code and ack_flags:
        raise _fail("CONNACK: session present with a non-zero return code [MQTT-3.2.2-4]")
    return ConnAck(bool(ack_flags), code)


def _id_packet(cls: type[PubAck | PubRec | PubRel | PubComp | UnsubAck], name: str) -> Callable[..., Packet]:
    # as in _decode_publish: no frozen __init__ per packet
    reason = "reason_codes" if cls is UnsubAck else "reason_code"
    set_packet_id, set_reason, set_properties = (
        vars(cls)[name].__set__ for name in ("packet_id", reason, "properties")
    )
    no_reason: int | tuple[int, ...] = () if cls is UnsubAck else 0

    def decode_id_packet(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        if end - pos != 2:
            raise _fail(f"{name}: remaining length must be 2")
        packet_id = buf[pos] << 8 | buf[pos + 1]
        if packet_id == 0:
            raise _fail(f"{name}: packet identifier 0 [MQTT-2.3.1-1]")
        packet = _new_object(cls)
        set_packet_id(packet, packet_id)
        set_reason(packet, no_reason)
        set_properties(packet, NO_PROPERTIES)
        return packet

    return decode_id_packet


def _decode_subscribe(buf: bytes, pos: int, end: int, flags: int) -> Subscribe:
    packet_id = _read_id(buf, pos, end, "SUBSCRIBE")
    pos += 2
    topics: list[tuple[str, int]] = []
    while pos < end:
        topic_filter, pos = _read_str(buf, pos, end, "topic filter")
        if pos >= end:
            raise _fail("SUBSCRIBE: topic filter without requested QoS")
        qos = buf[pos]
        pos += 1
        if qos > 2:  # upper six bits reserved, and QoS 3 [MQTT-3.8.3-4]
            raise _fail(f"SUBSCRIBE: invalid requested QoS byte 0x{qos:02x} [MQTT-3.8.3-4]")
        topics.append((topic_filter, qos))
    if not topics:
        raise _fail("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(topics))


def _decode_suback(buf: bytes, pos: int, end: int, flags: int) -> SubAck:
    packet_id = _read_id(buf, pos, end, "SUBACK")
    codes = tuple(buf[pos + 2 : end])
    if not codes:
        raise _fail("SUBACK without return codes")
    for code in codes:
        if code not in (0, 1, 2, 0x80):
            raise _fail(f"SUBACK: invalid return code 0x{code:02x} [MQTT-3.9.3-2]")
    return SubAck(packet_id, codes)


def _decode_unsubscribe(buf: bytes, pos: int, end: int, flags: int) -> Unsubscribe:
    packet_id = _read_id(buf, pos, end, "UNSUBSCRIBE")
    pos += 2
    topics: list[str] = []
    while pos < end:
        topic_filter, pos = _read_str(buf, pos, end, "topic filter")
        topics.append(topic_filter)
    if not topics:
        raise _fail("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(topics))


def _empty(packet: Packet, name: str) -> Callable[..., Packet]:
    def decode_empty(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        if end != pos:
            raise _fail(f"{name}: remaining length must be 0")
        return packet

    return decode_empty


_new_object: Final = object.__new__


def _decode_publish(buf: bytes, pos: int, end: int, flags: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _fail("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    if flags & 0x08 and not qos:
        raise _fail("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
    if end - pos < 2:
        raise _fail("PUBLISH: too short for a topic name")
    tstart = pos + 2
    tend = tstart + (buf[pos] << 8 | buf[pos + 1])
    if tend == tstart:
        raise _fail("PUBLISH with an empty topic name [MQTT-4.7.3-1]")
    if tend > end:
        raise _fail("PUBLISH: topic length runs past the remaining length")
    try:
        topic = buf[tstart:tend].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("PUBLISH topic name is not well-formed UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in topic:  # three substring searches cost less than one regular expression search
        raise _fail("PUBLISH topic name contains U+0000 [MQTT-1.5.3-2]")
    if "+" in topic or "#" in topic:
        raise _fail("PUBLISH topic name contains a wildcard [MQTT-3.3.2-2]")
    if qos:
        if tend + 2 > end:
            raise _fail("PUBLISH: too short for a packet identifier")
        packet_id = buf[tend] << 8 | buf[tend + 1]
        if not packet_id:
            raise _fail("PUBLISH: packet identifier 0 [MQTT-2.3.1-1]")
        tend += 2
    else:
        packet_id = None
    return Publish(topic, buf[tend:end], qos, bool(flags & 1), bool(flags & 8), packet_id, None, NO_PROPERTIES)


_Body = Callable[[bytes, int, int, int], Packet]
_decode_puback: Final = _id_packet(PubAck, "PUBACK")  # also next_packet's shortcut for a 2-byte PUBACK
_DECODERS: Final[tuple[_Body | None, ...]] = (
    None,
    _decode_connect,
    _decode_connack,
    _decode_publish,
    _decode_puback,
    _id_packet(PubRec, "PUBREC"),
    _id_packet(PubRel, "PUBREL"),
    _id_packet(PubComp, "PUBCOMP"),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _id_packet(UnsubAck, "UNSUBACK"),
    _empty(PingReq(), "PINGREQ"),
    _empty(PingResp(), "PINGRESP"),
    _empty(Disconnect(), "DISCONNECT"),
    None,
)


class Decoder:
    """Pull parser: ``feed(bytes)``, then call ``next_packet()`` until it returns ``None``.

    ``server_side=True`` accepts only the packets a client may send,
    ``server_side=False`` only those a server may send. After a protocol error
    the decoder stays failed: ``next_packet`` raises the same error again and
    ``feed`` discards its input.

    Buffering: bytes are kept as the ``bytes`` objects the caller fed; packets
    are sliced out of them by offset (no copy of the buffer per packet). Chunks
    are joined only once the packet they belong to is complete, or to read a
    split fixed header, so a large packet fed in small pieces costs O(n).
    """

    __slots__ = (
        "_allowed", "_bodies", "_buf", "_chunks", "_chunks_len", "_error", "_fast", "_max", "_need", "_pos", "_publish"
    )  # fmt: skip

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, *, server_side: bool = True) -> None:
        if max_packet_size < 0:
            raise ValueError("max_packet_size must be >= 0")
        self._max = max_packet_size
        allowed = _CLIENT_TO_SERVER if server_side else _SERVER_TO_CLIENT
        self._allowed = tuple(t in allowed for t in range(16))
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunks_len = 0
        self._need = 2  # bytes needed from _pos before parsing can progress
        self._error: MQTTProtocolError | None = None
        # What decodes each packet's body; an MQTT 5 decoder (codec5.py) swaps these after CONNECT.
        self._bodies: tuple[_Body | None, ...] = _DECODERS
        self._publish: Callable[[bytes, int, int, int], Publish] = _decode_publish
        self._fast = True  # MQTT 3.1.1: next_packet's one-piece PUBLISH shortcut decodes here and keeps ``raw``

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as packets."""
        return len(self._buf) - self._pos + self._chunks_len

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer (discarded once the decoder has failed)."""
        if not data or self._error is not None:
            return
        if self._pos >= len(self._buf) and not self._chunks:
            self._buf = bytes(data)  # no copy when ``data`` is already bytes
            self._pos = 0
        else:
            chunk = bytes(data)
            self._chunks.append(chunk)
            self._chunks_len += len(chunk)

    def next_packet(self) -> Packet | None:
        """The next complete packet, or ``None`` if more data is needed; raises ``MQTTProtocolError``."""
        if self._error is not None:
            raise self._error
        try:
            # The commonest packet first: a PUBLISH (allowed both ways) with a one-byte remaining length,
            # complete in the buffer. Anything else, and any doubt, goes through _next.
            buf = self._buf
            pos = self._pos
            size = len(buf)
            if pos + 2 <= size:
                first = buf[pos]
                if first >> 4 == PUBLISH:
                    length = buf[pos + 1]
                    end = pos + 2 + length
                    if length < 0x80 and end <= size and length <= self._max:
                        self._pos = end
                        self._need = 2
                        if not self._fast:  # an MQTT 5 decoder's (codec5.py)
                            return self._publish(buf, pos + 2, end, first & 0x0F)
                        packet = _decode_publish(buf, pos + 2, end, first & 0x0F)
                        packet.raw = buf[pos:end]
                        return packet
                elif first == 0x40 and buf[pos + 1] == 2 and pos + 4 <= size and self._max >= 2:
                    # The next commonest: a PUBACK of 2 bytes (allowed both ways; in MQTT 5 too, reason 0 and
                    # no properties, so every decoder's body reader for it is this one)
                    self._pos = pos + 4
                    self._need = 2
                    return _decode_puback(buf, pos + 2, pos + 4, 0)
            return self._next()
        except MQTTProtocolError as exc:
            self._fail(exc)
            raise
        except (IndexError, ValueError, struct.error) as exc:  # a bug guard: never leak another exception
            error = MQTTProtocolError(f"malformed packet ({exc.__class__.__name__}: {exc})")
            self._fail(error)
            raise error from exc

    def _fail(self, error: MQTTProtocolError) -> None:
        self._error = error
        self._buf = b""
        self._pos = 0
        self._chunks.clear()
        self._chunks_len = 0

    def _merge(self) -> bool:
        """Join the pending chunks onto the buffer if that gives at least ``_need`` bytes."""
        if not self._chunks or len(self._buf) - self._pos + self._chunks_len < self._need:
            return False
        self._chunks.insert(0, self._buf[self._pos :])
        self._buf = b"".join(self._chunks)
        self._pos = 0
        self._chunks.clear()
        self._chunks_len = 0
        return True

    def _next(self) -> Packet | None:
        while True:
            buf = self._buf
            pos = self._pos
            size = len(buf)
            if size - pos < self._need:
                if not self._merge():
                    return None
                buf = self._buf
                pos = 0
                size = len(buf)
            first = buf[pos]
            ptype = first >> 4
            if not self._allowed[ptype]:
                raise _fail(f"unexpected packet type {_NAMES[ptype]} (0x{first:02x}) in this direction")
            flags = first & 0x0F
            expected = _FLAGS[ptype]
            if expected >= 0 and flags != expected:
                raise _fail(f"{_NAMES[ptype]}: reserved fixed header flags 0x{flags:x} [MQTT-2.2.2-1] [MQTT-2.2.2-2]")
            digit = buf[pos + 1]
            if digit < 0x80:
                length = digit
                start = pos + 2
            else:
                length = digit & 0x7F
                shift = 7
                i = pos + 2
                while True:
                    if i >= size:
                        self._need = i - pos + 1
                        break
                    digit = buf[i]
                    i += 1
                    length |= (digit & 0x7F) << shift
                    if digit < 0x80:
                        break
                    shift += 7
                    if shift == 28:
                        raise _fail(f"{_NAMES[ptype]}: remaining length longer than 4 bytes [MQTT-2.2.3]")
                if digit >= 0x80:  # header incomplete
                    if self._merge():
                        continue
                    return None
                start = i
            if length > self._max:
                raise PacketTooLarge(
                    f"{_NAMES[ptype]}: remaining length {length} exceeds the maximum packet size {self._max}"
                )
            end = start + length
            if end > size:
                self._need = end - pos
                if self._merge():
                    continue
                return None
            self._pos = end
            self._need = 2
            if ptype == PUBLISH:
                return self._publish(buf, start, end, flags)
            decoder = self._bodies[ptype]
            assert decoder is not None
            return decoder(buf, start, end, flags)
