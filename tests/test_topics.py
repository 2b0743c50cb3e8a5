"""Topic names, filters and their NATS subjects (pure unit tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidName
from gateway.topics import (
    Namespace,
    filter_is_subset,
    filters_overlap,
    parse_subject,
    topic_matches,
    validate_filter,
    validate_topic,
)

NS = Namespace("alice", "myapp")


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a/b/c",
        "with.dots",
        "with space",
        "ünïcødé/日本",
        "$SYS/x",
        "a//b",
        "/leading",
        "trailing/",
        "*star",
        ">gt",
        "%41",
        "/",
    ],
)
def test_every_valid_name_round_trips_through_its_subject(name: str) -> None:
    subject = NS.subject(validate_topic(name))
    assert " " not in subject and "*" not in subject.split(".", 4)[-1] and ">" not in subject
    namespace, topic = parse_subject(subject)
    assert (namespace, topic) == (NS, name)


@given(
    st.lists(
        st.text(st.characters(blacklist_characters="\x00+#/", blacklist_categories=["Cs"]), max_size=8),
        min_size=1,
        max_size=5,
    )
)
def test_random_names_round_trip(levels: list[str]) -> None:
    name = "/".join(levels)
    if not name:
        return
    assert parse_subject(NS.subject(validate_topic(name))) == (NS, name)


@pytest.mark.parametrize("name", ["", "a+b", "a/#", "a\x00b", "x" * 1025, "\ud800"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_topic(name)


@pytest.mark.parametrize("name", ["a/b#", "#/a", "a+/b", "a/++"])
def test_invalid_filters_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_filter(name)


def test_short_and_full_names() -> None:
    assert NS.topic("notifications") == "notifications"
    assert NS.topic("alice_myapp_notifications") == "notifications"
    # another namespace's full name is just a short name here: it cannot escape
    assert NS.topic("bob_myapp_notifications") == "bob_myapp_notifications"
    assert NS.subject(NS.topic("bob_myapp_x")).startswith("fg.msg.alice.myapp.")
    assert NS.full("x") == "alice_myapp_x"


def test_filters_map_to_nats_wildcards() -> None:
    assert NS.filter_subjects("sensors/+/temp") == ("fg.msg.alice.myapp.sensors.*.temp",)
    assert NS.filter_subjects("#") == ("fg.msg.alice.myapp.>",)
    assert NS.filter_subjects("a/#") == ("fg.msg.alice.myapp.a", "fg.msg.alice.myapp.a.>")
    assert NS.subscription_subject(["a/b"]) == ("fg.msg.alice.myapp.a.b", True)
    assert NS.subscription_subject(["a/#"]) == ("fg.msg.alice.myapp.>", False)
    assert NS.subscription_subject(["a", "b"]) == ("fg.msg.alice.myapp.>", False)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+", "a/b", False),
        ("+/+", "/x", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
    ],
)
def test_mqtt_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_subset_and_overlap() -> None:
    assert filter_is_subset("a/b", "a/#")
    assert filter_is_subset("a/+/c", "a/#")
    assert not filter_is_subset("a/#", "a/+")
    assert not filter_is_subset("#", "a/#")
    assert filters_overlap("a/+", "+/b")
    assert not filters_overlap("a/b", "a/c")


@pytest.mark.parametrize("ident", ["", "A", "a_b", "x" * 65, "a.b"])
def test_user_and_app_names_are_checked(ident: str) -> None:
    with pytest.raises(InvalidName):
        Namespace(ident, "app")
    with pytest.raises(InvalidName):
        Namespace("user", ident)
