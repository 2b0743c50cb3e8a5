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

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from auth.permissions import Rule
from gateway.message_meta import MessageMeta
from gateway.payload import Delivery
from gateway.sinks import FilteredSink, Interest


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
    interest: Interest = field(init=False, repr=False, compare=False)  # of ``topic_filter``, which never changes

    def __post_init__(self) -> None:
        self.interest = Interest((self.topic_filter,))

    def takes(self, seq: int) -> bool:
        """Whether a delivery of stream sequence ``seq`` is for this subscription by its start: a persistent
        session's after ``since``; a clean session's (``since`` 0) all, its core-tier ones (sequence 0) too."""
        return seq > self.since or not self.since


class HubSink(FilteredSink):
    """Hands the hub's deliveries for one subject to a connection's ``deliver_live``, for one subscription.

    Each of the filter's subjects (``Namespace.filter_subjects``) matches it
    exactly, so ``deliver`` is ``deliver_live`` itself unless the ``$`` rule or
    the token's deny filters can apply (``FilteredSink``).
    """

    __slots__ = ()

    def __init__(self, target: DeliveryTarget, subscription: Subscription, rule: Rule) -> None:
        super().__init__(subscription.interest, rule, partial(target.deliver_live, subscription), exact=True)


def best_match(subscriptions: Iterable[Subscription], delivery: Delivery, rule: Rule) -> Subscription | None:
    """The matching subscription with the highest QoS: one copy per message [MQTT-3.3.5-1]."""
    best: Subscription | None = None
    topic = delivery.topic
    for sub in subscriptions:
        if sub.takes(delivery.seq) and sub.interest.wants(topic, rule):
            if best is None or sub.qos > best.qos:
                best = sub
    return best


def carrier(topic_filter: str, topic: str) -> str:
    """Which part of ``topic_filter``, matching ``topic``, has the bus subject that carries it to the hub's sinks.

    ``Namespace.filter_subjects`` gives 'a/#' two subjects, 'a' and 'a.>' [MQTT-4.7.1-2]; every other
    filter has one. Two filters matching ``topic`` with the same carrier (e.g. 'a' and 'a/#' for the topic
    'a') have their sinks on one hub entry, so they are handed the same ``Delivery`` object for it.
    """
    if topic_filter.endswith("#") and topic.count("/") < topic_filter.count("/"):
        return topic_filter[:-2]  # 'a/#' matching 'a' itself: the parent's subject
    return topic_filter


@dataclass(slots=True)
class OneCopy:
    """A connection some two of whose filters overlap: the last live delivery it handled and the filters
    that delivery went out for, once (``Outbound._one_copy``)."""

    delivery: Delivery | None = None
    covered: set[str] = field(default_factory=set)


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
