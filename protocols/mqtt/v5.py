"""The sans-I/O rules MQTT 5.0 adds to a connection: no awaits, no clock (``now`` comes in), no sockets.

``MqttSession`` (``session.py``) holds one ``V5Session`` per MQTT 5 connection
(``None`` for 3.1.1), and the connection asks it what to send:

- ``V5Session.from_connect``: what the client asked for in CONNECT (Session
  Expiry Interval [3.1.2.11.2], Receive Maximum [3.1.2.11.3], Maximum Packet
  Size [3.1.2.11.4], Topic Alias Maximum [3.1.2.11.5]) and ``connack`` with
  the server's own limits, an Assigned Client Identifier for an empty client id
  [MQTT-3.2.2-16] and Server Keep Alive [MQTT-3.2.2-21].
- ``publish``: the PUBLISH bytes of one delivery: the message's properties with
  the remaining Message Expiry Interval [MQTT-3.3.2-6], the subscription
  identifiers [MQTT-3.3.4-3], a Topic Alias within the client's maximum
  [MQTT-3.3.2-9, 3.3.2-10]; ``None`` for a message that expired, or that is
  larger than the client's Maximum Packet Size: it is then skipped for this
  client [MQTT-3.1.2-25].
- ``meta_of_publish``: the cross-protocol ``MessageMeta`` of a PUBLISH received.
- Error tables: the reason code of a refused CONNECT, PUBLISH, SUBSCRIBE, and
  of a DISCONNECT the server sends.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Final

from gateway.errors import (
    FlowGateError,
    Forbidden,
    InvalidName,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    Unauthorized,
)
from gateway.message_meta import MessageMeta
from gateway.payload import Delivery
from protocols.mqtt.codec5 import encode_publish5
from protocols.mqtt.connect_rules import valid_client_id
from protocols.mqtt.packets import (
    CONNACK_ACCEPTED,
    CONNACK_BAD_CREDENTIALS,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_SERVER_UNAVAILABLE,
    CONNACK_UNACCEPTABLE_PROTOCOL,
    ConnAck,
    Connect,
)
from protocols.mqtt.properties import NO_PROPERTIES, Properties, ReasonCode, encode_properties, encode_varint

R = ReasonCode
TOPIC_ALIAS_MAXIMUM: Final = 64  # aliases a client may use towards the server
RECEIVE_MAXIMUM: Final = 1024  # QoS 1/2 publishes a client may have unacknowledged towards the server
SERVER_KEEP_ALIVE_MAX: Final = 60  # a client asking for more (or for none) gets this [MQTT-3.2.2-21]
NEVER_EXPIRES: Final = 0xFFFFFFFF  # Session Expiry Interval: the session does not expire [3.1.2.11.2]
JWT_AUTH_METHOD: Final = "JWT"  # enhanced authentication: the token in Authentication Data, AUTH re-authenticates

# 3.1.1 CONNACK return codes (what session.check_connect answers) -> MQTT 5 reason codes.
_CONNACK_V5: Final = {
    CONNACK_UNACCEPTABLE_PROTOCOL: R.UNSUPPORTED_PROTOCOL_VERSION,
    CONNACK_IDENTIFIER_REJECTED: R.CLIENT_IDENTIFIER_NOT_VALID,
    CONNACK_SERVER_UNAVAILABLE: R.SERVER_UNAVAILABLE,
    CONNACK_BAD_CREDENTIALS: R.BAD_USER_NAME_OR_PASSWORD,
    CONNACK_NOT_AUTHORIZED: R.NOT_AUTHORIZED,
}


class BadAuthenticationMethod(Unauthorized):
    """CONNECT named an Authentication Method other than ``JWT``: CONNACK 0x8C [3.1.2.11.9]."""

    code = "bad_authentication_method"


def connack_reason(v311_code: int, error: FlowGateError | None = None) -> int:
    """The CONNACK reason code for a refused CONNECT, from the 3.1.1 code and, when known, the error."""
    if isinstance(error, BadAuthenticationMethod):
        return R.BAD_AUTHENTICATION_METHOD
    if isinstance(error, InvalidName):
        return R.TOPIC_NAME_INVALID
    if isinstance(error, PaymentRequired):
        return R.QUOTA_EXCEEDED
    if isinstance(error, RateLimited):
        return R.CONNECTION_RATE_EXCEEDED
    if isinstance(error, NotFound):
        return R.NOT_AUTHORIZED
    return _CONNACK_V5.get(v311_code, R.UNSPECIFIED_ERROR)


def check_connect5(connect: Connect) -> int:
    """``session.check_connect`` for MQTT 5 (as a 3.1.1 code, mapped by ``connack_reason``).

    An empty client id is assigned one whatever Clean Start says [MQTT-3.1.3-6]; with an
    Authentication Method the token is the Authentication Data, not the password [3.1.2.11.9].
    """
    if not valid_client_id(connect.client_id):
        return CONNACK_IDENTIFIER_REJECTED
    if connect.properties.authentication_method is not None:
        return CONNACK_ACCEPTED
    if connect.username is None or connect.username.lower() != "bearer" or not connect.password:
        return CONNACK_BAD_CREDENTIALS
    return CONNACK_ACCEPTED


def publish_reason(error: FlowGateError) -> int:
    """PUBACK/PUBREC reason code for a refused publish (QoS 1/2), or a DISCONNECT code (>= 0x95 for those)."""
    if isinstance(error, Forbidden):
        return R.NOT_AUTHORIZED  # [3.4.2.1] 0x87
    if isinstance(error, PaymentRequired):
        return R.QUOTA_EXCEEDED  # 0x97: the 402 of the HTTP API
    if isinstance(error, InvalidName):
        return R.TOPIC_NAME_INVALID
    if isinstance(error, RateLimited):
        return R.MESSAGE_RATE_TOO_HIGH  # 0x96, a DISCONNECT reason code only
    if isinstance(error, PayloadTooLarge):
        return R.PACKET_TOO_LARGE  # 0x95, a DISCONNECT reason code only
    return R.UNSPECIFIED_ERROR


def suback_reason(error: FlowGateError) -> int:
    if isinstance(error, Forbidden):
        return R.NOT_AUTHORIZED
    if isinstance(error, InvalidName):
        return R.TOPIC_FILTER_INVALID
    if isinstance(error, PaymentRequired):
        return R.QUOTA_EXCEEDED
    if isinstance(error, Unauthorized):
        return R.NOT_AUTHORIZED
    return R.UNSPECIFIED_ERROR


def expiry_seconds(session_expiry_interval: int, limit: float) -> float:
    """How long a persistent session outlives its connection: the client's interval, capped by the server's."""
    if session_expiry_interval >= NEVER_EXPIRES:
        return limit
    return min(float(session_expiry_interval), limit)


class OutboundAliases:
    """Topic aliases the server uses towards the client: a topic gets one while there are free ones, for good."""

    __slots__ = ("_aliases", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._aliases: dict[str, int] = {}

    def use(self, topic: str) -> tuple[str, int | None]:
        """(topic name to put in the PUBLISH, alias or ``None``): the name is empty once the client knows the alias."""
        if not self.maximum:
            return topic, None
        alias = self._aliases.get(topic)
        if alias is not None:
            return "", alias
        if len(self._aliases) >= self.maximum:
            return topic, None
        alias = self._aliases[topic] = len(self._aliases) + 1  # 1..maximum [MQTT-3.3.2-9]
        return topic, alias

    def forget(self, topic: str) -> None:
        """The alias just assigned to ``topic`` was not sent after all: free it again."""
        if self._aliases.get(topic) == len(self._aliases):
            del self._aliases[topic]


def expired(meta: MessageMeta | None, now: float) -> bool:
    """Whether a message's Message Expiry Interval has passed: it is then not delivered [MQTT-3.3.2-5]."""
    return meta is not None and meta.expires_at is not None and meta.expires_at <= now


def meta_of_publish(props: Properties, now: float, origin: str, *, retain: bool = False) -> MessageMeta:
    """What travels with a message published over MQTT 5 (``Fg-Props``); ``origin`` serves No Local."""
    expiry = props.message_expiry_interval
    return MessageMeta(
        content_type=props.content_type,
        payload_format=props.payload_format_indicator,
        response_topic=props.response_topic,
        correlation_data=props.correlation_data,
        user_properties=props.user_properties,
        expires_at=None if expiry is None else now + expiry,
        origin=origin,
        retain=retain,
    )


def message_properties(meta: MessageMeta | None, now: float | None = None) -> Properties:
    """The PUBLISH properties of a message's meta (without its expiry when ``now`` is ``None``)."""
    if meta is None:
        return NO_PROPERTIES
    expiry = None
    if now is not None and meta.expires_at is not None:
        expiry = max(1, math.ceil(meta.expires_at - now))
    return Properties(
        payload_format_indicator=meta.payload_format,
        message_expiry_interval=expiry,
        content_type=meta.content_type,
        response_topic=meta.response_topic,
        correlation_data=meta.correlation_data,
        user_properties=meta.user_properties,
    )


def render_qos0(delivery: Delivery, full: bool) -> bytes:
    """A QoS 0 PUBLISH of a delivery as every MQTT 5 subscriber without per-subscriber properties gets it
    (rendered once per delivery: ``Delivery.frame``)."""
    topic = delivery.namespace.full(delivery.topic) if full else delivery.topic
    meta = delivery.payload.meta
    if meta is None or meta.bare:
        return encode_publish5(topic, delivery.payload.body)
    return encode_publish5(
        topic, delivery.payload.body, 0, False, False, None, encode_properties(message_properties(meta))
    )


def has_message_properties(props: Properties) -> bool:
    """Whether a PUBLISH carries properties to forward (its Topic Alias is the connection's own business)."""
    return props is not NO_PROPERTIES and props != Properties(topic_alias=props.topic_alias)


@dataclass(slots=True)
class V5Session:
    """One MQTT 5 connection's negotiated limits and outbound topic aliases."""

    session_expiry_interval: int
    receive_maximum: int  # the client's: at most this many QoS 1/2 deliveries in flight [MQTT-3.3.4-7]
    maximum_packet_size: int | None  # the client's: larger deliveries are skipped [MQTT-3.1.2-25]
    keepalive: int
    server_keep_alive: int | None
    auth_method: str | None
    aliases: OutboundAliases
    origin: str = field(default_factory=lambda: secrets.token_hex(8))
    expiry_changed: bool = False  # DISCONNECT set another Session Expiry Interval [3.14.2.2.2]

    @classmethod
    def from_connect(cls, connect: Connect) -> V5Session:
        props = connect.properties
        keepalive = connect.keepalive
        server_keep_alive = None
        if keepalive == 0 or keepalive > SERVER_KEEP_ALIVE_MAX:
            server_keep_alive = keepalive = SERVER_KEEP_ALIVE_MAX
        return cls(
            session_expiry_interval=props.session_expiry_interval or 0,
            receive_maximum=props.receive_maximum or 65535,
            maximum_packet_size=props.maximum_packet_size,
            keepalive=keepalive,
            server_keep_alive=server_keep_alive,
            auth_method=props.authentication_method,
            aliases=OutboundAliases(props.topic_alias_maximum or 0),
        )

    def connack(
        self, session_present: bool, assigned_client_id: str | None, max_remaining_length: int, receive_maximum: int
    ) -> ConnAck:
        """The CONNACK of an accepted CONNECT, with the server's limits [3.2.2.3].

        The decoder limits a packet's remaining length; Maximum Packet Size counts the whole packet, its
        fixed header too [3.2.2.3.6]: the type byte and the remaining length's own bytes.
        """
        props = Properties(
            receive_maximum=receive_maximum,
            maximum_packet_size=1 + len(encode_varint(max_remaining_length)) + max_remaining_length,
            topic_alias_maximum=TOPIC_ALIAS_MAXIMUM,
            assigned_client_identifier=assigned_client_id,
            server_keep_alive=self.server_keep_alive,
            authentication_method=self.auth_method,
        )
        return ConnAck(session_present, R.SUCCESS, props)

    def publish(
        self,
        topic: str,
        body: bytes,
        qos: int,
        retain: bool,
        dup: bool,
        packet_id: int | None,
        meta: MessageMeta | None,
        subscription_ids: tuple[int, ...],
        now: float,
    ) -> bytes | None:
        """The PUBLISH of one delivery, or ``None`` when it must be skipped (expired, or too large for the client)."""
        expiry = None
        if meta is not None and meta.expires_at is not None:
            remaining = meta.expires_at - now
            if remaining <= 0:
                return None  # expired: not delivered [MQTT-3.3.2-5]
            expiry = math.ceil(remaining)
        aliases = self.aliases
        name, alias = aliases.use(topic) if aliases.maximum else (topic, None)
        if (meta is None or meta.bare) and alias is None and not subscription_ids:  # the commonest: no properties
            data = encode_publish5(name, body, qos, retain, dup, packet_id)
            too_large = self.maximum_packet_size is not None and len(data) > self.maximum_packet_size
            return None if too_large else data
        props = Properties(
            payload_format_indicator=meta.payload_format if meta else None,
            message_expiry_interval=expiry,
            content_type=meta.content_type if meta else None,
            response_topic=meta.response_topic if meta else None,
            correlation_data=meta.correlation_data if meta else None,
            subscription_identifiers=subscription_ids,
            topic_alias=alias,
            user_properties=meta.user_properties if meta else (),
        )
        data = encode_publish5(name, body, qos, retain, dup, packet_id, encode_properties(props))
        if self.maximum_packet_size is not None and len(data) > self.maximum_packet_size:
            if alias is not None and name:
                self.aliases.forget(topic)  # the client never learnt it
            return None
        return data
