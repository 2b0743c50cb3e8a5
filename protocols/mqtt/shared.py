"""Shared subscriptions ``$share/<group>/<filter>`` (MQTT 5 section 4.8.2, also offered to 3.1.1 clients).

``parse_shared`` is the sans-I/O rule for the name [MQTT-4.8.2-1, 4.8.2-2].
``SharedSubscriptions`` is one connection's memberships: each is a member of
the group's durable consumer (``gateway/bus/shared_consumer.py``), so each
message goes to one member of the group across all replicas. A message is
acknowledged when the client completed it (PUBACK/PUBCOMP, or when sent at
QoS 0); when the connection ends or unsubscribes, the messages its client did
not acknowledge go back to the group for another member [4.8.2, "the Server
... MUST complete the delivery to another client"]. Shared memberships belong
to the connection: they are not stored with a persistent session.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from auth.tokens import Claims
from gateway.bus.core import MESSAGES_STREAM
from gateway.bus.session_consumer import SessionMessage
from gateway.bus.shared_consumer import SharedConsumer, shared_consumer_name
from gateway.errors import Forbidden, InvalidName
from gateway.sinks import Interest
from gateway.topics import Namespace
from protocols.mqtt.context import MqttContext
from protocols.mqtt.session import OutboundWindow, delivery_qos
from protocols.mqtt.subscriptions import Outgoing


class SharedHost(Protocol):
    """What shared memberships need from their connection (``MqttConnection`` is one)."""

    ctx: MqttContext
    claims: Claims | None
    _window: OutboundWindow[Outgoing]
    _backlog: deque[Outgoing]
    _close_reason: str | None

    def _queue_out(self, item: Outgoing) -> None: ...

    def count_delivery(self, namespace: Namespace) -> None: ...


log = logging.getLogger("flowgate.mqtt")

SHARE_PREFIX = "$share/"
MAX_SHARED = 16  # shared memberships per connection


def parse_shared(name: str) -> tuple[str, str] | None:
    """(group, filter) of a ``$share/<group>/<filter>`` name, ``None`` for an ordinary filter.

    Raises ``InvalidName`` for a group that is empty or holds ``/``, ``+`` or ``#``,
    or a missing filter [MQTT-4.8.2-1, 4.8.2-2].
    """
    if not name.startswith(SHARE_PREFIX):
        return None
    group, sep, topic_filter = name[len(SHARE_PREFIX) :].partition("/")
    if not group or "+" in group or "#" in group:
        raise InvalidName(f"shared subscription {name!r}: the group name must be non-empty, without + or #")
    if not sep or not topic_filter:
        raise InvalidName(f"shared subscription {name!r} has no topic filter [MQTT-4.8.2-2]")
    return group, topic_filter


@dataclass(slots=True)
class Membership:
    name: str  # as the client spelt it: $share/group/filter
    topic_filter: str
    qos: int
    full: bool
    interest: Interest  # of ``topic_filter``: the consumer's subject may take more (e.g. ``$`` topics)
    consumer: SharedConsumer
    ids: tuple[int, ...] = ()


class SharedSubscriptions:
    __slots__ = ("_conn", "members")

    def __init__(self, conn: SharedHost) -> None:
        self._conn = conn
        self.members: dict[str, Membership] = {}  # by name; the connection tests it on its hot path

    async def subscribe(self, name: str, group: str, requested: int, ids: tuple[int, ...]) -> int:
        """Join (or re-join at another QoS) the group; returns the granted QoS. Raises ``FlowGateError``."""
        conn = self._conn
        claims = conn.claims
        assert claims is not None
        namespace = claims.namespace
        _, short = parse_shared(name) or ("", "")
        topic_filter = namespace.filter(short)
        if not claims.permissions.subscribe.permits_filter(topic_filter):
            raise Forbidden(f"may not subscribe to {topic_filter!r}")
        granted = min(requested, 2)
        existing = self.members.get(name)
        if existing is not None:
            existing.qos, existing.ids = granted, ids
            return granted
        if len(self.members) >= MAX_SHARED:
            raise Forbidden(f"at most {MAX_SHARED} shared subscriptions per connection")
        subject, _ = namespace.subscription_subject([topic_filter])
        consumer_name = shared_consumer_name(namespace.prefix, group, topic_filter)
        full = short.startswith(namespace.prefix) and len(short) > len(namespace.prefix)
        bus = conn.ctx.services.bus
        consumer = SharedConsumer(bus, MESSAGES_STREAM, consumer_name, subject, partial(self._on_message, name))
        member = Membership(name, topic_filter, granted, full, Interest((topic_filter,)), consumer, ids)
        await consumer.open(window=max(1, conn._window.free), expiry=conn.ctx.config.session_expiry)
        self.members[name] = member
        return granted

    async def unsubscribe(self, name: str) -> bool:
        member = self.members.pop(name, None)
        if member is None:
            return False
        await member.consumer.leave(self._unacknowledged(member.consumer))
        return True

    def want(self, free: int) -> None:
        for member in self.members.values():
            member.consumer.want(free)

    async def close(self) -> None:
        members, self.members = list(self.members.values()), {}
        for member in members:
            await member.consumer.leave(self._unacknowledged(member.consumer))

    def _unacknowledged(self, consumer: SharedConsumer) -> list[str]:
        """The ack subjects of this consumer's messages still in the window or the backlog."""
        conn = self._conn
        items = [flight.item for _, flight in conn._window.items()] + list(conn._backlog)
        subjects = [i.ack_subject for i in items if i.consumer is consumer and i.ack_subject is not None]
        for item in items:
            if item.consumer is consumer:
                item.ack_subject = None  # given back: never acknowledged by this connection now
        return subjects

    def _on_message(self, name: str, message: SessionMessage) -> None:
        conn = self._conn
        member = self.members.get(name)
        claims = conn.claims
        if conn._close_reason is not None or claims is None or member is None:
            return  # not acknowledged: given back when the membership ends, or after the ack wait
        consumer = member.consumer
        delivery = message.delivery
        topic = delivery.topic
        if not member.interest.wants(topic, claims.permissions.subscribe):
            consumer.ack(message.ack_subject)
            return
        # Not ``MqttSession.redelivery``: a membership belongs to the connection, so a message the group gives
        # back is new to the member that gets it: an identifier from the window, DUP 0 [MQTT-3.3.1-3].
        qos = delivery_qos(delivery.qos, member.qos)
        name = delivery.namespace.full(topic) if member.full else topic
        item = Outgoing(name, delivery.payload.body, qos, ack_subject=message.ack_subject, meta=delivery.payload.meta)
        item.sub_ids = member.ids
        item.consumer = consumer
        conn._queue_out(item)
        conn.count_delivery(delivery.namespace)
        consumer.want(conn._window.free - len(conn._backlog))
