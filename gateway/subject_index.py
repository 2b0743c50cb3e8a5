"""Which registered NATS subject filters match a subject: a token tree, as nats-server's sublist.

Filters are dot-separated tokens where ``*`` matches exactly one token and a
final ``>`` matches one or more. ``match`` walks one branch per token (plus the
wildcard branches), so its cost grows with the subject's depth, not with the
number of filters; results are cached per subject until the filters change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

CACHE_SIZE = 4096  # subjects whose matches are remembered; the cache starts over beyond this


@dataclass(slots=True)
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)  # next token (``*`` included) -> node
    ends: dict[str, T] = field(default_factory=dict)  # filters ending at this node, by filter
    rest: dict[str, T] = field(default_factory=dict)  # filters ending with ``>`` after this node, by filter


class SubjectIndex(Generic[T]):
    """One value per subject filter; ``match(subject)`` gives the values of every filter matching it."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0
        self._cache: dict[str, tuple[T, ...]] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, subject_filter: str, value: T) -> None:
        """Register ``value`` for ``subject_filter`` (replacing any value it had)."""
        node = self._root
        *path, last = subject_filter.split(".")
        for token in path:
            node = node.children.setdefault(token, _Node())
        slot = node.rest if last == ">" else node.children.setdefault(last, _Node()).ends
        if subject_filter not in slot:
            self._count += 1
        slot[subject_filter] = value
        self._cache.clear()

    def remove(self, subject_filter: str) -> None:
        """Forget ``subject_filter``; empty branches are pruned."""
        *path, last = subject_filter.split(".")
        trail = [self._root]
        for token in path:
            child = trail[-1].children.get(token)
            if child is None:
                return
            trail.append(child)
        if last == ">":
            found = trail[-1].rest.pop(subject_filter, None) is not None
        else:
            leaf = trail[-1].children.get(last)
            found = leaf is not None and leaf.ends.pop(subject_filter, None) is not None
            path.append(last)
            if leaf is not None:
                trail.append(leaf)
        if not found:
            return
        self._count -= 1
        self._cache.clear()
        for token, node, parent in zip(reversed(path), reversed(trail[1:]), reversed(trail[:-1]), strict=True):
            if node.children or node.ends or node.rest:
                break
            del parent.children[token]

    def match(self, subject: str) -> tuple[T, ...]:
        """The values of every filter matching ``subject`` (a subject, without wildcards)."""
        found = self._cache.get(subject)
        if found is not None:
            return found
        values: list[T] = []
        nodes = [self._root]
        for token in subject.split("."):
            following: list[_Node[T]] = []
            for node in nodes:
                if node.rest:
                    values.extend(node.rest.values())
                exact = node.children.get(token)
                if exact is not None:
                    following.append(exact)
                star = node.children.get("*")
                if star is not None and star is not exact:
                    following.append(star)
            nodes = following
            if not nodes:
                break
        for node in nodes:
            values.extend(node.ends.values())
        found = tuple(values)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[subject] = found
        return found
