"""A connection's MQTT subscriptions and the outgoing messages they produce.

``Subscription`` is one topic filter with its granted QoS. For a clean session
it feeds the connection through ``HubSink``s on the process-wide fan-out hub
(one bus subscription per distinct subject, shared by every connection; the
core tier for a subscription granted QoS 0 or 1, the stored one for QoS 2); for a
persistent session the session consumer's messages are matched against the
subscriptions here (``best_match``). ``Outgoing`` is one PUBLISH waiting for or
occupying a place in the in-flight window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from auth.permissions import Rule
from gateway.message_meta import MessageMeta
from gateway.payload import Delivery
from gateway.topics import topic_matches


class Acker(Protocol):
    def ack(self, ack_subject: str) -> None: ...


class DeliveryTarget(Protocol):
    def deliver_live(self, subscription: Subscription, delivery: Delivery) -> None: ...


@dataclass(slots=True)
class Subscription:
    topic_filter: str
    qos: int
    full: bool  # the client used full names: deliveries carry full topic names too
    since: int = 0  # persistent sessions: only messages after this stream sequence match
    sinks: list[tuple[str, HubSink]] = field(default_factory=list)
    core: bool = False  # the sinks are on the hub's core tier (granted QoS 0 or 1)
    # MQTT 5 subscription options [3.8.3.1] and identifier [3.8.2.1.2]
    no_local: bool = False
    retain_as_published: bool = False
    ids: tuple[int, ...] = ()


class HubSink:
    """Hands the hub's deliveries for one subject to a connection, for one subscription.

    The bus subject already matches the filter exactly, except for the ``$``
    rule of wildcard filters [MQTT-4.7.2-1] and the token's deny filters,
    which are checked here only when they can apply; otherwise ``deliver`` is
    the connection's own ``deliver_live`` for this subscription.
    """

    __slots__ = ("deliver", "rule", "subscription", "target")

    def __init__(self, target: DeliveryTarget, subscription: Subscription, rule: Rule) -> None:
        self.target = target
        self.subscription = subscription
        self.rule = rule
        checked = subscription.topic_filter[:1] in ("+", "#") or bool(rule.deny)
        self.deliver: Callable[[Delivery], None] = (
            self._checked if checked else partial(target.deliver_live, subscription)
        )

    def _checked(self, delivery: Delivery) -> None:
        topic = delivery.topic
        if topic_matches(self.subscription.topic_filter, topic) and not self.rule.hides(topic):
            self.target.deliver_live(self.subscription, delivery)


def best_match(subscriptions: Iterable[Subscription], delivery: Delivery, rule: Rule) -> Subscription | None:
    """The matching subscription with the highest QoS: one copy per message [MQTT-3.3.5-1]."""
    best: Subscription | None = None
    topic = delivery.topic
    for sub in subscriptions:
        if delivery.seq > sub.since and topic_matches(sub.topic_filter, topic):
            if best is None or sub.qos > best.qos:
                best = sub
    if best is not None and rule.hides(topic):
        return None
    return best


@dataclass(slots=True)
class Outgoing:
    """One message for the client.

    ``packet_id`` is preset for persistent-session messages (derived from the
    stream sequence) and allocated from the window otherwise; ``ack_subject``
    acknowledges a persistent-session message once the client completed it.
    """

    topic: str
    body: bytes
    qos: int
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    ack_subject: str | None = None
    meta: MessageMeta | None = None  # MQTT 5: the message's properties
    sub_ids: tuple[int, ...] = ()  # MQTT 5: the matching subscription's identifier
    consumer: Acker | None = None  # acknowledges ``ack_subject`` (default: the session's consumer)
