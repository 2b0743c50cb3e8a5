"""The subscriber-sink model (gateway/sinks.py): one filter check, skipped only when it cannot fail."""

from __future__ import annotations

import time

from auth.permissions import Rule
from gateway.payload import Delivery, Kind, Payload
from gateway.sinks import FilteredSink, Interest
from gateway.topics import Namespace

NS = Namespace("alice", "app")


def delivery(topic: str) -> Delivery:
    return Delivery(1, NS, topic, Payload(b"x", Kind.TEXT), time.time_ns(), 0)


def test_interest_wants_a_matching_topic_the_rule_does_not_hide() -> None:
    interest = Interest(("a/+", "b/#"))
    assert interest.wants("a/x") and interest.wants("b") and interest.wants("b/c/d")
    assert not interest.wants("c") and not interest.wants("a/x/y")
    assert not interest.wants("a/x", Rule(deny=("a/x",)))
    assert interest.wants("a/y", Rule(deny=("a/x",)))


def test_interest_keeps_the_dollar_rule() -> None:
    assert not Interest(("#",)).wants("$SYS/x")  # [MQTT-4.7.2-1]
    assert not Interest(("+/b",)).wants("$a/b")
    assert Interest(("$events/#",)).wants("$events/connected")


def test_interest_is_settled_only_when_the_subject_decides() -> None:
    assert Interest(("a/b",)).settled(Rule(), exact=True)
    assert Interest(("a/b",)).settled(None, exact=True)
    assert not Interest(("a/b",)).settled(Rule(), exact=False)  # a wider subject: match here
    assert not Interest(("+/b",)).settled(Rule(), exact=True)  # the subject also takes $ topics
    assert not Interest(("#",)).settled(None, exact=True)
    assert not Interest(("a/b",)).settled(Rule(deny=("x",)), exact=True)  # the rule may hide some


def test_filtered_sink_checks_only_what_the_subject_cannot() -> None:
    got: list[str] = []

    def receive(d: Delivery) -> None:
        got.append(d.topic)

    settled = FilteredSink(Interest(("a/b",)), Rule(), receive, exact=True)
    assert settled.deliver is receive  # no call in between on the hot path
    settled.deliver(delivery("a/b"))
    wide = FilteredSink(Interest(("a/b", "c")), Rule(), receive, exact=False)
    wide.deliver(delivery("a/b"))
    wide.deliver(delivery("d"))
    wild = FilteredSink(Interest(("#",)), Rule(), receive, exact=True)
    wild.deliver(delivery("$SYS/x"))
    wild.deliver(delivery("e"))
    assert got == ["a/b", "a/b", "e"]


def test_a_restricted_sink_withholds_what_the_new_rule_hides() -> None:
    got: list[str] = []
    sink = FilteredSink(Interest(("a/#",)), Rule(), lambda d: got.append(d.topic), exact=False)
    sink.deliver(delivery("a/secret"))
    sink.restrict(Rule(deny=("a/secret",)))
    sink.deliver(delivery("a/secret"))
    sink.deliver(delivery("a/open"))
    settled = FilteredSink(Interest(("a/secret",)), Rule(), lambda d: got.append(d.topic), exact=True)
    settled.restrict(Rule(deny=("a/secret",)))
    settled.deliver(delivery("a/secret"))
    assert got == ["a/secret", "a/open"]
