"""The MQTT 5 hooks of one connection: where ``connection.py`` asks what MQTT 5 changes.

``MqttConnection`` keeps its 3.1.1 flow; at each point where MQTT 5 differs it
calls one method here (``conn.v5`` is ``None`` for a 3.1.1 client, and these
methods then answer as 3.1.1 did). The rules themselves are sans-I/O, in
``v5.py`` and in ``session.py`` (CONNACK reason codes, Receive Maximum, the
client's DISCONNECT, which AUTH may come); this adapter applies them to the
connection's state and services: message properties to and from ``Fg-Props``,
subscription options, deliveries (expiry, aliases, maximum packet size), the
DISCONNECT the server sends and re-authentication (AUTH).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import NoReturn, Protocol

from auth.tokens import Claims
from gateway.bus.mqtt_store import StoredSubscription
from gateway.bus.session_consumer import SessionConsumer
from gateway.errors import FlowGateError
from gateway.message_meta import PROPS_HEADER, MessageMeta
from gateway.payload import QOS_HEADER, Delivery, Payload
from protocols.mqtt.actions import Reauthenticate
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.codec5 import encode5, encode_publish5
from protocols.mqtt.context import MqttContext
from protocols.mqtt.flow import OutboundWindow
from protocols.mqtt.packets import (
    Connect,
    Disconnect,
    Packet,
    PubAck,
    Publish,
    PubRec,
    Subscribe,
    Will,
)
from protocols.mqtt.properties import NO_PROPERTIES, Properties, ReasonCode
from protocols.mqtt.session import MqttSession
from protocols.mqtt.subscriptions import Outgoing, Subscription
from protocols.mqtt.v5 import (
    JWT_AUTH_METHOD,
    BadAuthenticationMethod,
    V5Session,
    expiry_seconds,
    meta_of_publish,
    publish_reason,
    render_qos0,
    suback_reason,
)


class V5Host(Protocol):
    """What the MQTT 5 hooks need from their connection (``MqttConnection`` is one)."""

    ctx: MqttContext
    id: str
    v5: V5Session | None
    claims: Claims | None
    client_id: str
    session_key: str | None
    _loop: asyncio.AbstractEventLoop
    _window: OutboundWindow[Outgoing]
    _backlog: deque[Outgoing]
    _consumer: SessionConsumer | None
    _consumer_name: str
    _counted: bool
    _disconnect_code: int | None
    session: MqttSession
    _peer_gone: bool
    _token_timer: asyncio.TimerHandle | None
    _write_paused: bool

    def abort(self, cause: CloseCause, reason: str) -> None: ...

    def _fail(self, cause: CloseCause, reason: str) -> NoReturn: ...

    def _queue_out(self, item: Outgoing) -> None: ...

    def _hold(self, item: Outgoing) -> None: ...

    def _queue_ready(self, packet: bytes) -> None: ...

    def _send(self, packet: Packet) -> None: ...

    def _write(self, data: bytes) -> None: ...

    def _token_expired(self) -> None: ...


log = logging.getLogger("flowgate.mqtt")

R = ReasonCode
_QOS_HEADERS = ({QOS_HEADER: "0"}, {QOS_HEADER: "1"}, {QOS_HEADER: "2"})
_RETAINED = MessageMeta(retain=True)
FRAME5_SHORT, FRAME5_FULL = "mqtt5-0", "mqtt5-0f"  # Delivery.frame names: a v5 QoS 0 PUBLISH, short or full topic


def _render(delivery: Delivery) -> bytes:
    return render_qos0(delivery, False)


def _render_full(delivery: Delivery) -> bytes:
    return render_qos0(delivery, True)


_RENDER, _RENDER_FULL = _render, _render_full
_ACKED_REFUSALS = frozenset({R.NOT_AUTHORIZED, R.QUOTA_EXCEEDED, R.TOPIC_NAME_INVALID})
_CLOSING_REFUSALS = {
    R.MESSAGE_RATE_TOO_HIGH: CloseCause.PUBLISH_RATE_TOO_HIGH,
    R.PACKET_TOO_LARGE: CloseCause.PUBLISH_TOO_LARGE,
}


class V5Hooks:
    __slots__ = ("_conn", "_origin_meta")

    def __init__(self, conn: V5Host) -> None:
        self._conn = conn
        self._origin_meta: MessageMeta | None = None

    @property
    def _v5(self) -> V5Session:
        v5 = self._conn.v5
        assert v5 is not None
        return v5

    # -- CONNECT ----------------------------------------------------------------------------------

    def token(self, connect: Connect) -> str:
        """The JWT of an MQTT 5 CONNECT: the password, or the Authentication Data of method ``JWT``."""
        method = connect.properties.authentication_method
        if method is None:
            return (connect.password or b"").decode("utf-8")
        if method != JWT_AUTH_METHOD:
            raise BadAuthenticationMethod(f"unsupported authentication method {method!r}; use {JWT_AUTH_METHOD!r}")
        return (connect.properties.authentication_data or connect.password or b"").decode("utf-8")

    def session_expiry(self) -> float:
        limit = self._conn.ctx.config.session_expiry
        if self._conn.v5 is None:
            return limit
        return expiry_seconds(self._v5.session_expiry_interval, limit)

    # -- PUBLISH from the client ----------------------------------------------------------------------

    def meta(self, packet: Publish) -> MessageMeta | None:
        if self._conn.v5 is None:
            return _RETAINED if packet.retain else None  # for Retain As Published subscribers
        return meta_of_publish(packet.properties, time.time(), self._v5.origin, retain=packet.retain)

    def payload(self, packet: Publish, meta: MessageMeta | None) -> Payload:
        return Payload(packet.payload, None, self.bare_meta() if meta is None else meta)

    def headers(self, qos: int, meta: MessageMeta | None) -> dict[str, str]:
        if meta is None:
            meta = self.bare_meta()
            if meta is None:
                return _QOS_HEADERS[qos]
        return {QOS_HEADER: str(qos), PROPS_HEADER: meta.to_header()}

    def bare_meta(self) -> MessageMeta | None:
        """What a message published without properties carries: nothing (3.1.1), or for MQTT 5 only where it
        came from (No Local), made once; the connection keeps it from CONNECT on (``_bare_meta``)."""
        if self._conn.v5 is None:
            return None
        if self._origin_meta is None:
            self._origin_meta = MessageMeta(origin=self._v5.origin)
        return self._origin_meta

    def refused_publish(self, packet: Publish, error: FlowGateError) -> bool:
        """MQTT 5's answer to a refused publish: a PUBACK/PUBREC reason code, or a DISCONNECT; False: as 3.1.1."""
        conn = self._conn
        code = publish_reason(error)
        if code in _ACKED_REFUSALS:
            conn.ctx.services.metrics.rejected.labels("mqtt", error.code).inc()
            log.warning("mqtt %s: publish to %r refused (0x%02x): %s", conn.id, packet.topic, code, error.message)
            if packet.qos:
                ack = PubAck(packet.packet_id or 0, code) if packet.qos == 1 else PubRec(packet.packet_id or 0, code)
                conn._queue_ready(encode5(ack))
            return True
        cause = _CLOSING_REFUSALS.get(code)
        if cause is not None:
            conn._fail(cause, f"publish to {packet.topic!r} refused: {error.message}")
        return False

    # -- SUBSCRIBE ------------------------------------------------------------------------------------

    def suback_reason(self, error: FlowGateError) -> int:
        return suback_reason(error)

    def subscribed(self, sub: Subscription, packet: Subscribe, index: int, existed: bool) -> bool:
        """Apply a subscription's options [3.8.3.1]; whether to send it the retained messages."""
        if self._conn.v5 is None:
            return True
        options = packet.options[index] if index < len(packet.options) else 0
        sub.no_local = bool(options & 0x04)
        sub.retain_as_published = bool(options & 0x08)
        sub.ids = packet.properties.subscription_identifiers
        retain_handling = (options >> 4) & 0x03
        # 0: send retained messages; 1: only for a new subscription; 2: never [MQTT-3.3.1-9, 3.3.1-10, 3.3.1-11]
        return retain_handling == 0 or (retain_handling == 1 and not existed)

    @staticmethod
    def stored_options(sub: Subscription) -> tuple[int, tuple[int, ...]]:
        """What a persistent session keeps of a subscription's MQTT 5 options (``StoredSubscription``)."""
        return (0x04 if sub.no_local else 0) | (0x08 if sub.retain_as_published else 0), sub.ids

    @staticmethod
    def restored(sub: Subscription, stored: StoredSubscription) -> Subscription:
        sub.no_local = bool(stored.options & 0x04)
        sub.retain_as_published = bool(stored.options & 0x08)
        sub.ids = stored.ids
        return sub

    @staticmethod
    def matching_ids(subs: Iterable[Subscription], delivery: Delivery) -> tuple[int, ...]:
        """The identifiers of every subscription ``delivery`` matches (one copy: every id [MQTT-3.3.4-4])."""
        topic, seq = delivery.topic, delivery.seq
        return tuple(i for sub in subs if sub.ids and sub.takes(seq) and sub.interest.wants(topic) for i in sub.ids)

    # -- deliveries -----------------------------------------------------------------------------------

    def wanted(self, sub: Subscription, delivery: Delivery) -> bool:
        """No Local: not the client's own messages [MQTT-3.8.3-3]."""
        if not sub.no_local:
            return True
        meta = delivery.payload.meta
        return meta is None or meta.origin != self._v5.origin

    def deliver(self, sub: Subscription, delivery: Delivery, qos: int) -> bool:
        """``MqttConnection.deliver_live`` for MQTT 5 (False: not for this client). A QoS 0 message without
        per-subscriber properties (subscription identifier, topic alias, expiry) is rendered once for all."""
        conn = self._conn
        v5 = conn.v5
        assert v5 is not None
        meta = delivery.payload.meta
        if sub.no_local and meta is not None and meta.origin == v5.origin:
            return False  # No Local [MQTT-3.8.3-3]
        if (
            qos == 0
            and not sub.ids
            and not v5.aliases.maximum
            and (meta is None or (meta.expires_at is None and not (meta.retain and sub.retain_as_published)))
            and not conn._write_paused
            and not conn._backlog
        ):
            frame = delivery.frame(FRAME5_FULL if sub.full else FRAME5_SHORT, _RENDER_FULL if sub.full else _RENDER)
            if v5.maximum_packet_size is not None and len(frame) > v5.maximum_packet_size:
                return False  # [MQTT-3.1.2-25]
            conn._write(frame)
            return True
        item = self.outgoing(sub, delivery, qos)
        if conn._backlog or conn._write_paused:
            conn._hold(item)  # behind the others (_queue_out's first case)
            return True
        if (
            qos
            and not sub.ids
            and not v5.aliases.maximum
            and v5.maximum_packet_size is None
            and (meta is None or meta.bare)
        ):  # as 3.1.1's inlined path: a place in the window, then the PUBLISH without properties
            packet_id = conn._window.put(qos, item)
            if packet_id is not None:
                conn._write(encode_publish5(item.topic, item.body, qos, item.retain, False, packet_id))
                return True
        conn._queue_out(item)
        return True

    def outgoing(self, sub: Subscription, delivery: Delivery, qos: int) -> Outgoing:
        meta = delivery.payload.meta
        topic = delivery.namespace.full(delivery.topic) if sub.full else delivery.topic
        # Retain As Published [MQTT-3.3.1-12, 3.3.1-13]
        retain = sub.retain_as_published and meta is not None and meta.retain
        return Outgoing(topic, delivery.payload.body, qos, retain, meta=meta, sub_ids=sub.ids)

    def send_out(self, item: Outgoing) -> None:
        """``MqttConnection._send_out`` for MQTT 5: a message that expired or is too large is skipped."""
        conn = self._conn
        window = conn._window
        packet_id = None
        if item.qos:
            packet_id = item.packet_id if item.packet_id is not None else window.allocate()
            assert packet_id is not None
        data = self._v5.publish(
            item.topic, item.body, item.qos, item.retain, item.dup, packet_id, item.meta, item.sub_ids, time.time()
        )
        if data is None:
            log.info("mqtt %s: message to %r skipped: expired or above the client's maximum size", conn.id, item.topic)
            consumer = item.consumer or conn._consumer
            if item.ack_subject is not None and consumer is not None:
                consumer.ack(item.ack_subject)
            return
        if packet_id is not None:
            window.add(packet_id, item.qos, item)
        elif item.ack_subject is not None:
            consumer = item.consumer or conn._consumer
            if consumer is not None:
                consumer.ack(item.ack_subject)
        conn._write(data)

    # -- will, DISCONNECT, AUTH -------------------------------------------------------------------------

    def will_meta(self, will: Will) -> MessageMeta | None:
        if self._conn.v5 is None or will.properties is NO_PROPERTIES:
            return None
        return meta_of_publish(will.properties, time.time(), self._v5.origin)

    async def closing(self, reason: str) -> None:
        """Before the socket closes: the server's DISCONNECT [MQTT-4.13.2-1], and a session set to expire now."""
        conn = self._conn
        code = conn._disconnect_code
        if code is not None and conn._counted and not conn._peer_gone:
            packet = Disconnect(code, Properties(reason_string=reason[:200]))
            if len(encode5(packet)) > (self._v5.maximum_packet_size or 1 << 28):
                packet = Disconnect(code)  # the reason string would break the client's limit [MQTT-3.1.2-25]
            conn._send(packet)
        if conn.session.expire_now and conn.session_key is not None and code != R.SESSION_TAKEN_OVER:
            # (taken over, the session lives on with its new connection [MQTT-3.1.4-3, 4.1])
            try:
                await conn.ctx.store.delete_session(conn.session_key, conn._consumer_name)
            except FlowGateError as exc:
                log.warning("mqtt %s: session not deleted: %s", conn.id, exc.message)
        elif conn.session.persistent and self._v5.expiry_changed:
            try:  # the DISCONNECT's Session Expiry Interval replaces the CONNECT's [3.14.2.2.2]
                await conn.ctx.store.keep_session(conn._consumer_name, self.session_expiry())
            except FlowGateError as exc:
                log.warning("mqtt %s: session expiry not changed: %s", conn.id, exc.message)

    async def on_auth(self, action: Reauthenticate) -> None:
        """Re-authentication with a fresh JWT [4.12.1] (the session checked the AUTH): same user and app,
        a later expiry; AUTH 0x00 back."""
        conn = self._conn
        packet = action.auth
        try:
            claims = conn.ctx.services.tokens.verify((packet.properties.authentication_data or b"").decode("utf-8"))
        except (FlowGateError, UnicodeDecodeError) as exc:
            conn._fail(CloseCause.REAUTH_FAILED, f"re-authentication failed: {exc}")
        old = conn.claims
        assert old is not None
        if (claims.user_id, claims.app, claims.namespace) != (old.user_id, old.app, old.namespace):
            conn._fail(CloseCause.REAUTH_FAILED, "re-authentication with another identity")
        self._renew(claims)
        conn._write(conn.session.reauthenticated().data)
        log.info("mqtt %s re-authenticated until %d", conn.id, claims.expires_at)

    def _renew(self, claims: Claims) -> None:
        conn = self._conn
        conn.claims = claims
        if conn._token_timer is not None:
            conn._token_timer.cancel()
        conn._token_timer = conn._loop.call_later(max(0.0, claims.expires_at - time.time()), conn._token_expired)
