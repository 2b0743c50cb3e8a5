"""The subscriber-sink model: what a subscriber wants, and the one sink that applies it.

The fan-out hub (``gateway.hub``) hands each delivery on a bus subject to the
``Sink``s registered for it. A subscriber's ``Interest`` is its topic filters;
``Interest.wants`` is the one check every subscriber applies (SSE, WebSocket,
MQTT, shared subscriptions, retained messages, webhooks): a filter matches the
topic, with the ``$`` rule for filters starting with a wildcard
[MQTT-4.7.2-1], and the token's subscribe rule (``TopicRule.hides``) does not
hide it. ``FilteredSink`` applies that check to a hub's deliveries, and skips
it when it cannot fail (``Interest.settled``): the bus subject matches exactly
the filters, none starts with a wildcard and the rule hides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.payload import Delivery
from gateway.principal import TopicRule
from gateway.topics import leads_with_wildcard, topic_matches


class Sink(Protocol):
    def deliver(self, delivery: Delivery) -> None: ...


@dataclass(frozen=True, slots=True)
class Interest:
    """The topic filters one subscriber asked for."""

    filters: tuple[str, ...]

    def wants(self, topic: str, rule: TopicRule | None = None) -> bool:
        """Whether a message on ``topic`` is for this subscriber, under its token's subscribe ``rule``."""
        for topic_filter in self.filters:
            if topic_matches(topic_filter, topic):
                return rule is None or not rule.hides(topic)
        return False

    def settled(self, rule: TopicRule | None, *, exact: bool) -> bool:
        """Whether ``wants`` holds for every message on a bus subject, so need not be asked.

        ``exact``: the subject matches exactly these filters (``Namespace.subscription_subject``).
        It still matches ``$`` topics for a filter starting with a wildcard, and the rule may hide some.
        """
        hides_some = rule is not None and bool(rule.deny)
        return exact and not hides_some and not any(leads_with_wildcard(f) for f in self.filters)


class FilteredSink:
    """Hands a hub's deliveries that ``interest`` wants under ``rule`` to ``receive``.

    ``deliver`` is ``receive`` itself when the check is settled (no call in
    between on the hot path), else the checking method; ``restrict`` may swap
    it, so callers look it up on the sink each time rather than keep it.
    """

    __slots__ = ("deliver", "exact", "interest", "receive", "rule")

    deliver: Callable[[Delivery], None]
    rule: TopicRule

    def __init__(
        self, interest: Interest, rule: TopicRule, receive: Callable[[Delivery], None], *, exact: bool
    ) -> None:
        self.interest = interest
        self.receive = receive
        self.exact = exact
        self.restrict(rule)

    def restrict(self, rule: TopicRule) -> None:
        """Apply a (refreshed token's) subscribe rule to what is still to come."""
        self.rule = rule
        self.deliver = self.receive if self.interest.settled(rule, exact=self.exact) else self._checked

    def _checked(self, delivery: Delivery) -> None:
        if self.interest.wants(delivery.topic, self.rule):
            self.receive(delivery)
