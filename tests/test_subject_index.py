"""``SubjectIndex``: which NATS subject filters match a subject, checked against the NATS matching rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.subject_index import CACHE_SIZE, SubjectIndex


def nats_matches(subject_filter: str, subject: str) -> bool:
    """NATS's rule, token by token: ``*`` is one token, a final ``>`` one or more."""
    want, have = subject_filter.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@pytest.mark.parametrize(
    ("subject_filter", "subject", "expected"),
    [
        ("fg.msg.u.a.t", "fg.msg.u.a.t", True),
        ("fg.msg.u.a.t", "fg.msg.u.a.t.x", False),
        ("fg.msg.u.a.*", "fg.msg.u.a.t", True),
        ("fg.msg.u.a.*", "fg.msg.u.a.t.x", False),
        ("fg.msg.u.a.>", "fg.msg.u.a.t.x", True),
        ("fg.msg.u.a.>", "fg.msg.u.a", False),  # '>' needs at least one token
        ("fg.msg.*.a.>", "fg.msg.u.a.t", True),
        ("fg.msg.u.b.>", "fg.msg.u.a.t", False),
        (">", "fg", True),
    ],
)
def test_match_table(subject_filter: str, subject: str, expected: bool) -> None:
    index: SubjectIndex[str] = SubjectIndex()
    index.add(subject_filter, subject_filter)
    assert index.match(subject) == ((subject_filter,) if expected else ())
    assert nats_matches(subject_filter, subject) is expected  # the reference agrees with the table


def test_remove_forgets_prunes_and_invalidates_the_cache() -> None:
    index: SubjectIndex[int] = SubjectIndex()
    index.add("a.b.c", 1)
    index.add("a.*.c", 2)
    index.add("a.>", 3)
    assert sorted(index.match("a.b.c")) == [1, 2, 3] and len(index) == 3
    index.remove("a.*.c")
    assert sorted(index.match("a.b.c")) == [1, 3]  # the cached answer was dropped
    index.remove("a.*.c")  # twice, and unknown filters: nothing happens
    index.remove("x.y")
    index.remove("a.b")
    assert len(index) == 2
    index.add("a.b.c", 10)  # a filter has one value
    assert sorted(index.match("a.b.c")) == [3, 10] and len(index) == 2
    index.remove("a.b.c")
    index.remove("a.>")
    assert index.match("a.b.c") == () and len(index) == 0
    assert not index._root.children  # every branch pruned


def test_the_cache_stays_bounded() -> None:
    index: SubjectIndex[int] = SubjectIndex()
    index.add("s.>", 1)
    for i in range(CACHE_SIZE + 10):
        assert index.match(f"s.{i}") == (1,)
    assert len(index._cache) <= CACHE_SIZE


tokens = st.sampled_from(["a", "b", "c"])
filter_tokens = st.sampled_from(["a", "b", "c", "*"])
subjects = st.lists(tokens, min_size=1, max_size=4).map(".".join)
filters = st.builds(
    lambda head, tail: ".".join(head + ([">"] if tail else [])),
    st.lists(filter_tokens, min_size=0, max_size=4),
    st.booleans(),
).filter(bool)


@settings(max_examples=300)
@given(st.lists(filters, max_size=12, unique=True), st.lists(filters, max_size=6), st.lists(subjects, max_size=8))
def test_matches_exactly_what_nats_matches(added: list[str], removed: list[str], probes: list[str]) -> None:
    index: SubjectIndex[str] = SubjectIndex()
    for subject_filter in added:
        index.add(subject_filter, subject_filter)
    for subject in probes:  # fill the cache, which the removals must invalidate
        index.match(subject)
    for subject_filter in removed:
        index.remove(subject_filter)
    live = [f for f in added if f not in removed]
    assert len(index) == len(live)
    for subject in probes:
        assert sorted(index.match(subject)) == sorted(f for f in live if nats_matches(f, subject))
