"""Sans-I/O MQTT 5.0 codec beside the 3.1.1 one (``codec.py``): ``encode5`` and ``ServerDecoder``.

The packets are the same value objects (``packets.py``) with their MQTT 5
fields (``properties``, ``reason_code``...) filled in. Properties are read and
checked by ``properties.py``. ``ServerDecoder`` is the decoder a connection
starts with: it decodes MQTT 3.1.1 exactly as ``codec.Decoder`` does until a
CONNECT with protocol level 5 arrives, then decodes everything after it as
MQTT 5, including AUTH, and resolves inbound topic aliases [MQTT-3.3.2-12].

MQTT 5 rejections (``MQTTProtocolError`` with the ``reason_code`` of the
DISCONNECT to send first, [MQTT-4.13.1-1]), besides the 3.1.1 ones:

- property errors (``properties.py``): 0x81 malformed, 0x82 protocol error;
- a PUBLISH topic with wildcards [MQTT-3.3.2-2]: 0x90; a Topic Alias of 0 or
  above the Topic Alias Maximum the server sent [MQTT-3.3.2-8, 3.2.2-17]: 0x94;
  an empty topic with an unknown alias [3.3.2.3.4]: 0x82; a Subscription
  Identifier from the client [MQTT-3.3.4-6]: 0x82;
- SUBSCRIBE options with reserved bits [MQTT-3.8.3-5] or QoS 3: 0x81; Retain
  Handling 3 [3.8.3.1]: 0x82; SUBSCRIBE/UNSUBSCRIBE without filters
  [MQTT-3.8.3-2, 3.10.3-2]: 0x82;
- a reason code not defined for the packet (2.4): 0x82.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from protocols.mqtt.codec import (
    _DECODERS,
    _FLAGS,
    CONNECT,
    PUBLISH,
    Decoder,
    MQTTProtocolError,
    _check_id,
    _check_qos,
    _decode_connect,
    _length_bytes,
    _read_bin,
    _read_str,
)
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
    Will,
)
from protocols.mqtt.properties import (
    AUTH,
    CONNACK,
    DISCONNECT,
    NO_PROPERTIES,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    WILL,
    Properties,
    PropertyError,
    ReasonCode,
    decode_properties,
    encode_properties,
)

__all__ = ["MQTT5", "ServerDecoder", "decode_body", "encode5"]

MQTT5: Final = 5
_U16: Final = struct.Struct(">H")
_B_B_H: Final = struct.Struct(">BBH")
NO_PROPERTY_BYTES: Final = b"\x00"  # a property length of 0: what most packets carry
R = ReasonCode

# Reason codes each acknowledgement may carry (section 2.4 and each packet's 3.x.2.1).
PUBACK_CODES: Final = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREL_CODES: Final = frozenset({0x00, 0x92})
SUBACK_CODES: Final = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
UNSUBACK_CODES: Final = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
AUTH_CODES: Final = frozenset({0x00, 0x18, 0x19})
DISCONNECT_CODES: Final = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95}
    | {0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)
CONNACK_CODES: Final = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99}
    | {0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
_ACK_CODES: Final = {PUBACK: PUBACK_CODES, PUBREC: PUBACK_CODES, PUBREL: PUBREL_CODES, PUBCOMP: PUBREL_CODES}


def _fail(reason: str, code: int = R.MALFORMED_PACKET) -> MQTTProtocolError:
    return MQTTProtocolError(reason, code)


# -- encoding ---------------------------------------------------------------------------------


def _str(value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _bin(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return _U16.pack(len(value)) + value


def _packet(first: int, *parts: bytes) -> bytes:
    rest = b"".join(parts)
    return bytes((first,)) + _length_bytes(len(rest)) + rest


def encode_publish5(
    topic: str | bytes,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    properties: bytes = NO_PROPERTY_BYTES,
) -> bytes:
    """A v5 PUBLISH from its parts; ``properties`` already encoded (``encode_properties``), for the delivery path.

    As ``codec.encode_publish``, one ``struct`` call for the fixed header and topic length of a short
    packet, and the checks only where a value can be wrong (no helper call per message).
    """
    if isinstance(topic, str):
        topic = topic.encode("utf-8")
    tlen = len(topic)
    if tlen > 0xFFFF:
        raise ValueError("topic is longer than 65535 bytes")
    if qos == 0:
        first = 0x31 if retain else 0x30
        rlen = 2 + tlen + len(properties) + len(payload)
        if rlen < 0x80:
            return b"".join((_B_B_H.pack(first, rlen, tlen), topic, properties, payload))
        return b"".join((bytes((first,)), _length_bytes(rlen), _U16.pack(tlen), topic, properties, payload))
    if qos != 1 and qos != 2:
        _check_qos(qos, "PUBLISH qos")  # raises
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        _check_id(packet_id)  # raises
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    rlen = 4 + tlen + len(properties) + len(payload)
    head = _B_B_H.pack(first, rlen, tlen) if rlen < 0x80 else bytes((first,)) + _length_bytes(rlen) + _U16.pack(tlen)
    return b"".join((head, topic, _U16.pack(packet_id), properties, payload))


def _encode_connect(p: Connect) -> bytes:
    flags = 0x02 if p.clean_session else 0
    payload = [_str(p.client_id)]
    if p.will is not None:
        _check_qos(p.will.qos, "will qos")
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        payload += [encode_properties(p.will.properties, WILL), _str(p.will.topic), _bin(p.will.payload)]
    if p.username is not None:
        flags |= 0x80
        payload.append(_str(p.username))
    if p.password is not None:  # MQTT 5 allows a password without a user name [3.1.2.9]
        flags |= 0x40
        payload.append(_bin(p.password))
    head = _str(p.protocol_name) + struct.pack(">BBH", p.protocol_level, flags, p.keepalive)
    return _packet(0x10, head, encode_properties(p.properties, CONNECT), *payload)


def _encode_connack(p: ConnAck) -> bytes:
    return _packet(
        0x20, bytes((1 if p.session_present else 0, p.return_code)), encode_properties(p.properties, CONNACK)
    )


def _encode_publish(p: Publish) -> bytes:
    return encode_publish5(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, encode_properties(p.properties, 3))


def _ack(first: int, ptype: int) -> Callable[[PubAck | PubRec | PubRel | PubComp], bytes]:
    def encode_ack(p: PubAck | PubRec | PubRel | PubComp) -> bytes:
        head = _U16.pack(_check_id(p.packet_id))
        if not p.properties:
            if p.reason_code == 0:
                return _packet(first, head)  # reason and properties may be left out [MQTT-3.4.2.1]
            return _packet(first, head, bytes((p.reason_code,)))
        return _packet(first, head, bytes((p.reason_code,)), encode_properties(p.properties, ptype))

    return encode_ack


def _encode_subscribe(p: Subscribe) -> bytes:
    if not p.topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter [MQTT-3.8.3-2]")
    options = p.options or tuple(qos for _, qos in p.topics)
    parts = [_str(f) + bytes((o,)) for (f, _), o in zip(p.topics, options, strict=True)]
    return _packet(0x82, _U16.pack(_check_id(p.packet_id)), encode_properties(p.properties, SUBSCRIBE), *parts)


def _encode_suback(p: SubAck) -> bytes:
    head = _U16.pack(_check_id(p.packet_id))
    return _packet(0x90, head, encode_properties(p.properties, SUBACK), bytes(p.return_codes))


def _encode_unsubscribe(p: Unsubscribe) -> bytes:
    if not p.topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter [MQTT-3.10.3-2]")
    head = _U16.pack(_check_id(p.packet_id))
    return _packet(0xA2, head, encode_properties(p.properties, UNSUBSCRIBE), *(_str(t) for t in p.topics))


def _encode_unsuback(p: UnsubAck) -> bytes:
    head = _U16.pack(_check_id(p.packet_id))
    return _packet(0xB0, head, encode_properties(p.properties, UNSUBACK), bytes(p.reason_codes))


def _reason_only(first: int, ptype: int) -> Callable[[Disconnect | Auth], bytes]:
    def encode_reason(p: Disconnect | Auth) -> bytes:
        if not p.properties:
            if p.reason_code == 0:
                return bytes((first, 0))  # [MQTT-3.14.2.1, 3.15.2.1]
            return bytes((first, 1, p.reason_code))
        return _packet(first, bytes((p.reason_code,)), encode_properties(p.properties, ptype))

    return encode_reason


_ENCODERS: Final[dict[type, Callable[..., bytes]]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _ack(0x40, PUBACK),
    PubRec: _ack(0x50, PUBREC),
    PubRel: _ack(0x62, PUBREL),
    PubComp: _ack(0x70, PUBCOMP),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: lambda _: b"\xc0\x00",
    PingResp: lambda _: b"\xd0\x00",
    Disconnect: _reason_only(0xE0, DISCONNECT),
    Auth: _reason_only(0xF0, AUTH),
}


def encode5(packet: Packet) -> bytes:
    """The MQTT 5 wire bytes of ``packet``; ``ValueError`` for one that cannot be encoded."""
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise ValueError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet)


# -- decoding ---------------------------------------------------------------------------------


def _props(buf: bytes, pos: int, end: int, ptype: int) -> tuple[Properties, int]:
    try:
        return decode_properties(buf, pos, end, ptype)
    except PropertyError as exc:
        raise _fail(exc.reason, exc.reason_code) from None


def _id(buf: bytes, pos: int, end: int, name: str) -> int:
    if pos + 2 > end:
        raise _fail(f"{name}: too short for a packet identifier")
    packet_id = buf[pos] << 8 | buf[pos + 1]
    if packet_id == 0:
        raise _fail(f"{name}: packet identifier 0 [MQTT-2.3.1-1]")
    return packet_id


def decode_connect5(buf: bytes, pos: int, end: int, flags: int) -> Connect:
    name, pos = _read_str(buf, pos, end, "CONNECT protocol name")
    if pos + 4 > end:
        raise _fail("CONNECT: variable header truncated")
    level, cflags = buf[pos], buf[pos + 1]
    keepalive = buf[pos + 2] << 8 | buf[pos + 3]
    if cflags & 0x01:
        raise _fail("CONNECT: reserved flag set [MQTT-3.1.2-3]")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if not will_flag and (will_qos or will_retain):
        raise _fail("CONNECT: will QoS or retain without the will flag [MQTT-3.1.2-11] [MQTT-3.1.2-13]")
    if will_qos == 3:
        raise _fail("CONNECT: will QoS 3 [MQTT-3.1.2-12]")
    props, pos = _props(buf, pos + 4, end, CONNECT)
    client_id, pos = _read_str(buf, pos, end, "client identifier")
    will = None
    if will_flag:
        will_props, pos = _props(buf, pos, end, WILL)
        will_topic, pos = _read_str(buf, pos, end, "will topic")
        will_payload, pos = _read_bin(buf, pos, end, "will payload")
        will = Will(will_topic, bytes(will_payload), will_qos, will_retain, will_props)
    username = password = None
    if cflags & 0x80:
        username, pos = _read_str(buf, pos, end, "user name")
    if cflags & 0x40:
        password, pos = _read_bin(buf, pos, end, "password")
        password = bytes(password)
    if pos != end:
        raise _fail("CONNECT: bytes left over after the payload")
    return Connect(client_id, bool(cflags & 0x02), keepalive, username, password, will, name, level, props)


def _decode_connack(buf: bytes, pos: int, end: int, flags: int) -> ConnAck:
    if end - pos < 2:
        raise _fail("CONNACK: too short")
    ack_flags, code = buf[pos], buf[pos + 1]
    if ack_flags & 0xFE:
        raise _fail("CONNACK: reserved acknowledge flags set [MQTT-3.2.2-1]")
    if code not in CONNACK_CODES:
        raise _fail(f"CONNACK: invalid reason code 0x{code:02x}", R.PROTOCOL_ERROR)
    props = NO_PROPERTIES
    if end - pos > 2:
        props, pos = _props(buf, pos + 2, end, CONNACK)
        if pos != end:
            raise _fail("CONNACK: bytes left over")
    return ConnAck(bool(ack_flags), code, props)


def _decode_publish(buf: bytes, pos: int, end: int, flags: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _fail("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    if flags & 0x08 and not qos:
        raise _fail("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
    # The topic name and packet identifier read inline, as codec.py's decoder does (hot path).
    # An empty name is left to the caller: MQTT 5 allows it with a Topic Alias [MQTT-3.3.2-12].
    if end - pos < 2:
        raise _fail("PUBLISH topic name: length field runs past the remaining length")
    tend = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if tend > end:
        raise _fail("PUBLISH topic name: declared length runs past the remaining length")
    try:
        topic = buf[pos + 2 : tend].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("PUBLISH topic name is not well-formed UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in topic:  # three substring searches cost less than one regular expression search
        raise _fail("PUBLISH topic name contains U+0000 [MQTT-1.5.3-2]")
    if "+" in topic or "#" in topic:
        raise _fail("PUBLISH topic name contains a wildcard [MQTT-3.3.2-2]", R.TOPIC_NAME_INVALID)
    if qos:
        if tend + 2 > end:
            raise _fail("PUBLISH: too short for a packet identifier")
        packet_id: int | None = buf[tend] << 8 | buf[tend + 1]
        if not packet_id:
            raise _fail("PUBLISH: packet identifier 0 [MQTT-2.3.1-1]")
        tend += 2
    else:
        packet_id = None
    if tend < end and buf[tend] == 0:  # no properties: the commonest case
        props = NO_PROPERTIES
        tend += 1
    else:
        props, tend = _props(buf, tend, end, PUBLISH)
    return Publish(topic, buf[tend:end], qos, bool(flags & 1), bool(flags & 8), packet_id, None, props)


def _ack_packet(cls: type[PubAck | PubRec | PubRel | PubComp], ptype: int, name: str) -> Callable[..., Packet]:
    codes = _ACK_CODES[ptype]
    short = _DECODERS[ptype]  # remaining length 2: exactly the 3.1.1 packet (reason 0, no properties)
    assert short is not None

    def decode_ack(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        if end - pos == 2:
            return short(buf, pos, end, flags)
        packet_id = _id(buf, pos, end, name)
        code = buf[pos + 2]
        if code not in codes:
            raise _fail(f"{name}: invalid reason code 0x{code:02x}", R.PROTOCOL_ERROR)
        props = NO_PROPERTIES
        if end - pos > 3:
            props, stop = _props(buf, pos + 3, end, ptype)
            if stop != end:
                raise _fail(f"{name}: bytes left over after the properties")
        return cls(packet_id, code, props)

    return decode_ack


def _subscribe_options(byte: int) -> None:
    if byte & 0xC0:
        raise _fail(f"SUBSCRIBE: reserved option bits set in 0x{byte:02x} [MQTT-3.8.3-5]")
    if byte & 0x03 == 3:
        raise _fail("SUBSCRIBE: requested QoS 3 [MQTT-3.8.3-4]")
    if (byte >> 4) & 0x03 == 3:
        raise _fail("SUBSCRIBE: Retain Handling 3 [3.8.3.1]", R.PROTOCOL_ERROR)


def _decode_subscribe(buf: bytes, pos: int, end: int, flags: int) -> Subscribe:
    packet_id = _id(buf, pos, end, "SUBSCRIBE")
    props, pos = _props(buf, pos + 2, end, SUBSCRIBE)
    topics: list[tuple[str, int]] = []
    options: list[int] = []
    while pos < end:
        topic_filter, pos = _read_str(buf, pos, end, "topic filter")
        if pos >= end:
            raise _fail("SUBSCRIBE: topic filter without subscription options")
        byte = buf[pos]
        pos += 1
        _subscribe_options(byte)
        topics.append((topic_filter, byte & 0x03))
        options.append(byte)
    if not topics:
        raise _fail("SUBSCRIBE without topic filters [MQTT-3.8.3-2]", R.PROTOCOL_ERROR)
    return Subscribe(packet_id, tuple(topics), props, tuple(options))


def _decode_codes(
    cls: type[SubAck | UnsubAck], ptype: int, allowed: frozenset[int], name: str
) -> Callable[..., Packet]:
    def decode_codes(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        packet_id = _id(buf, pos, end, name)
        props, pos = _props(buf, pos + 2, end, ptype)
        codes = tuple(buf[pos:end])
        if not codes:
            raise _fail(f"{name} without reason codes", R.PROTOCOL_ERROR)
        for code in codes:
            if code not in allowed:
                raise _fail(f"{name}: invalid reason code 0x{code:02x}", R.PROTOCOL_ERROR)
        if cls is SubAck:
            return SubAck(packet_id, codes, props)
        return UnsubAck(packet_id, codes, props)

    return decode_codes


def _decode_unsubscribe(buf: bytes, pos: int, end: int, flags: int) -> Unsubscribe:
    packet_id = _id(buf, pos, end, "UNSUBSCRIBE")
    props, pos = _props(buf, pos + 2, end, UNSUBSCRIBE)
    topics: list[str] = []
    while pos < end:
        topic_filter, pos = _read_str(buf, pos, end, "topic filter")
        topics.append(topic_filter)
    if not topics:
        raise _fail("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]", R.PROTOCOL_ERROR)
    return Unsubscribe(packet_id, tuple(topics), props)


def _decode_reason(
    cls: type[Disconnect | Auth], ptype: int, allowed: frozenset[int], name: str
) -> Callable[..., Packet]:
    def decode_reason(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        if pos == end:
            return cls()
        code = buf[pos]
        if code not in allowed:
            raise _fail(f"{name}: invalid reason code 0x{code:02x}", R.PROTOCOL_ERROR)
        props = NO_PROPERTIES
        if end - pos > 1:
            props, stop = _props(buf, pos + 1, end, ptype)
            if stop != end:
                raise _fail(f"{name}: bytes left over after the properties")
        return cls(code, props)

    return decode_reason


def _empty(packet: Packet, name: str) -> Callable[..., Packet]:
    def decode_empty(buf: bytes, pos: int, end: int, flags: int) -> Packet:
        if end != pos:
            raise _fail(f"{name}: remaining length must be 0")
        return packet

    return decode_empty


_Body = Callable[[bytes, int, int, int], Packet]
BODIES5: Final[tuple[_Body | None, ...]] = (
    None,
    decode_connect5,
    _decode_connack,
    _decode_publish,
    _ack_packet(PubAck, PUBACK, "PUBACK"),
    _ack_packet(PubRec, PUBREC, "PUBREC"),
    _ack_packet(PubRel, PUBREL, "PUBREL"),
    _ack_packet(PubComp, PUBCOMP, "PUBCOMP"),
    _decode_subscribe,
    _decode_codes(SubAck, SUBACK, SUBACK_CODES, "SUBACK"),
    _decode_unsubscribe,
    _decode_codes(UnsubAck, UNSUBACK, UNSUBACK_CODES, "UNSUBACK"),
    _empty(PingReq(), "PINGREQ"),
    _empty(PingResp(), "PINGRESP"),
    _decode_reason(Disconnect, DISCONNECT, DISCONNECT_CODES, "DISCONNECT"),
    _decode_reason(Auth, AUTH, AUTH_CODES, "AUTH"),
)
assert _FLAGS[15] == 0  # AUTH carries flags 0 [MQTT-2.2.2-2]

_V5_CLIENT_TO_SERVER: Final = tuple(t in (1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15) for t in range(16))
_V5_SERVER_TO_CLIENT: Final = tuple(t in (2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15) for t in range(16))


def decode_body(ptype: int, body: bytes, flags: int = 0) -> Packet:
    """Decode one MQTT 5 packet body (for tests and tools): ``ptype`` from the fixed header."""
    decoder = BODIES5[ptype]
    if decoder is None:
        raise _fail(f"packet type {ptype} does not exist")
    if ptype == PUBLISH:
        return _decode_publish(body, 0, len(body), flags)
    return decoder(body, 0, len(body), flags)


class ServerDecoder(Decoder):
    """``codec.Decoder`` for a server: MQTT 3.1.1 until a CONNECT of protocol level 5, MQTT 5 from then on.

    ``topic_alias_maximum`` is what the server announced in CONNACK; a PUBLISH
    with a Topic Alias records it, and one with an empty topic gets the topic
    its alias stands for [MQTT-3.3.2-12, 3.3.2-13].
    """

    __slots__ = ("_aliases", "topic_alias_maximum", "version")

    def __init__(self, max_packet_size: int, *, topic_alias_maximum: int = 0) -> None:
        super().__init__(max_packet_size, server_side=True)
        self.version = 4
        self.topic_alias_maximum = topic_alias_maximum
        self._aliases: dict[int, str] = {}
        bodies = list(_DECODERS)
        bodies[CONNECT] = self._connect
        self._bodies = tuple(bodies)

    def _connect(self, buf: bytes, pos: int, end: int, flags: int) -> Packet:
        """A CONNECT: the protocol level (after the name) says which codec reads it and what follows."""
        if end - pos >= 7 and buf[pos : pos + 6] == b"\x00\x04MQTT" and buf[pos + 6] == MQTT5:
            connect = decode_connect5(buf, pos, end, flags)
            self.version = MQTT5
            self._bodies = BODIES5
            self._publish = self._publish5
            self._fast = False
            self._allowed = _V5_CLIENT_TO_SERVER
            return connect
        return _decode_connect(buf, pos, end, flags)

    def _publish5(self, buf: bytes, pos: int, end: int, flags: int) -> Publish:
        packet = _decode_publish(buf, pos, end, flags)
        props = packet.properties
        if props is NO_PROPERTIES and packet.topic:  # the commonest: no alias to resolve, nothing more to check
            if buf[pos - 2] == 0x30:
                # QoS 0, no flags, a one-byte remaining length (a longer one puts a continuation byte there):
                # kept so that the message is forwarded to MQTT 5 QoS 0 subscribers as received
                packet.raw = buf[pos - 2 : end]
            return packet
        if props.subscription_identifiers:
            raise _fail("PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]", R.PROTOCOL_ERROR)
        alias = props.topic_alias
        if alias is None:
            if not packet.topic:
                raise _fail("PUBLISH with an empty topic name and no Topic Alias [MQTT-4.7.3-1]", R.PROTOCOL_ERROR)
            return packet
        if not 0 < alias <= self.topic_alias_maximum:
            raise _fail(
                f"Topic Alias {alias} outside 1..{self.topic_alias_maximum} [MQTT-3.3.2-8] [MQTT-3.2.2-17]",
                R.TOPIC_ALIAS_INVALID,
            )
        if packet.topic:
            self._aliases[alias] = packet.topic
            return packet
        topic = self._aliases.get(alias)
        if topic is None:
            raise _fail(f"PUBLISH with an empty topic and unknown Topic Alias {alias} [3.3.2.3.4]", R.PROTOCOL_ERROR)
        return Publish(topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id, None, props)


class ClientDecoder(Decoder):
    """An MQTT 5 decoder for the packets a server sends (test clients and tools)."""

    __slots__ = ()

    def __init__(self, max_packet_size: int = 64 * 1024 * 1024) -> None:
        super().__init__(max_packet_size, server_side=False)
        self._bodies = BODIES5
        self._publish = _decode_publish
        self._fast = False
        self._allowed = _V5_SERVER_TO_CLIENT
