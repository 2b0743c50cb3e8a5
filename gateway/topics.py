"""Topic names, namespaces, MQTT-style filters and their NATS subjects.

A full name is ``userid_app_topic``. ``userid`` and ``app`` are 1-64 characters of
``[a-z0-9-]``; ``topic`` is one or more ``/``-separated levels under MQTT rules
(UTF-8, no NUL, no ``+``/``#`` in names). A token is scoped to one namespace
(user and app): a name that starts with the namespace's own ``userid_app_``
prefix is full, any other name is short and gets the prefix. A name can therefore
never leave its namespace.

Subjects: ``fg.msg.<userid>.<app>.<level>.<level>...``. Each level is escaped so
that every valid name round-trips exactly: bytes outside ``[A-Za-z0-9_-]`` become
``%XX`` (UTF-8, upper-case hex) and an empty level becomes a lone ``%``. Filters
map ``+`` to ``*`` and ``#`` to ``>``; ``a/#`` also matches ``a`` itself
[MQTT-4.7.1-2], so it maps to two subjects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from gateway.errors import InvalidName

MESSAGE_SUBJECT_ROOT = "fg.msg"
MAX_TOPIC_BYTES = 1024

_IDENT = re.compile(r"[a-z0-9-]{1,64}")
_PLAIN_TOPIC = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def validate_ident(value: str, what: str) -> str:
    """Check a user id or app name: 1-64 characters of ``[a-z0-9-]``."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise InvalidName(f"{what} must be 1-64 characters of a-z, 0-9 and '-'")
    return value


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str) or not text:
        raise InvalidName(f"{what} must be a non-empty string")
    if "\x00" in text:
        raise InvalidName(f"{what} must not contain NUL")  # [MQTT-4.7.3-2]
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName(f"{what} must be valid UTF-8") from None
    if size > MAX_TOPIC_BYTES:
        raise InvalidName(f"{what} is longer than {MAX_TOPIC_BYTES} bytes")


def validate_topic(topic: str) -> str:
    """Check a topic name (no wildcards) [MQTT-4.7.1-1]."""
    if len(topic) <= MAX_TOPIC_BYTES and _PLAIN_TOPIC.fullmatch(topic):
        return topic
    _check_text(topic, "topic")
    if "+" in topic or "#" in topic:
        raise InvalidName("a topic name must not contain '+' or '#'")
    return topic


def validate_filter(topic_filter: str) -> str:
    """Check a topic filter: ``+`` fills a whole level, ``#`` only the last one [MQTT-4.7.1-2, 4.7.1-3]."""
    if len(topic_filter) <= MAX_TOPIC_BYTES and _PLAIN_TOPIC.fullmatch(topic_filter):
        return topic_filter
    _check_text(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise InvalidName("'#' must be the last level of a filter, on its own")
        if "+" in level and level != "+":
            raise InvalidName("'+' must fill a whole filter level")
    return topic_filter


def is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def escape_level(level: str) -> str:
    if not level:
        return "%"
    if all(c in _SAFE for c in level):
        return level
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in level)


def unescape_level(token: str) -> str:
    if token == "%":
        return ""
    if "%" not in token:
        return token
    return unquote(token, errors="strict")


@lru_cache(maxsize=65536)
def _escape_topic(topic: str) -> str:
    if _PLAIN_TOPIC.fullmatch(topic):
        return topic.replace("/", ".")
    return ".".join(escape_level(level) for level in topic.split("/"))


def _escape_filter(topic_filter: str) -> tuple[str, ...]:
    levels = topic_filter.split("/")
    tail_hash = levels[-1] == "#"
    head = [{"+": "*"}.get(level) or escape_level(level) for level in (levels[:-1] if tail_hash else levels)]
    if not tail_hash:
        return (".".join(head),)
    if not head:
        return (">",)
    parent = ".".join(head)
    return (parent, parent + ".>")  # 'a/#' matches 'a' too [MQTT-4.7.1-2]


@dataclass(frozen=True, slots=True)
class Namespace:
    """One user's app: the scope of a token and of every name it uses."""

    user_id: str
    app: str

    def __post_init__(self) -> None:
        validate_ident(self.user_id, "user_id")
        validate_ident(self.app, "app")

    @property
    def prefix(self) -> str:
        return f"{self.user_id}_{self.app}_"

    @property
    def subject_prefix(self) -> str:
        return f"{MESSAGE_SUBJECT_ROOT}.{self.user_id}.{self.app}"

    @property
    def all_subjects(self) -> str:
        return f"{self.subject_prefix}.>"

    def short(self, name: str) -> str:
        """The topic part of ``name``: a full name in this namespace loses its prefix."""
        prefix = self.prefix
        return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else name

    def full(self, topic: str) -> str:
        return self.prefix + topic

    def topic(self, name: str) -> str:
        """Resolve a short or full topic name to a validated topic in this namespace."""
        return validate_topic(self.short(name))

    def filter(self, name: str) -> str:
        """Resolve a short or full filter to a validated filter in this namespace."""
        return validate_filter(self.short(name))

    def subject(self, topic: str) -> str:
        """The NATS subject of a validated topic in this namespace."""
        return f"{self.subject_prefix}.{_escape_topic(topic)}"

    def filter_subjects(self, topic_filter: str) -> tuple[str, ...]:
        """The NATS subject filters that together match a validated topic filter."""
        return tuple(f"{self.subject_prefix}.{s}" for s in _escape_filter(topic_filter))

    def subscription_subject(self, filters: list[str] | tuple[str, ...]) -> tuple[str, bool]:
        """One bus subject serving all ``filters``, and whether it matches exactly them.

        One filter that maps to one subject is exact; anything else (several
        filters, or ``a/#`` which needs two subjects) takes the whole namespace
        and is matched locally, which keeps one ordered stream per connection.
        """
        if len(filters) == 1:
            subjects = self.filter_subjects(filters[0])
            if len(subjects) == 1:
                return subjects[0], True
        return self.all_subjects, False


@lru_cache(maxsize=65536)
def parse_subject(subject: str) -> tuple[Namespace, str]:
    """Invert ``Namespace.subject``: the namespace and topic a message subject belongs to (cached: hot path)."""
    parts = subject.split(".")
    if len(parts) < 5 or f"{parts[0]}.{parts[1]}" != MESSAGE_SUBJECT_ROOT:
        raise InvalidName(f"not a message subject: {subject!r}")
    return Namespace(parts[2], parts[3]), "/".join(unescape_level(token) for token in parts[4:])


def leads_with_wildcard(topic_filter: str) -> bool:
    """Whether ``topic_filter`` starts with a wildcard, so must not match topics starting with ``$``
    [MQTT-4.7.2-1] that its bus subject (``Namespace.filter_subjects``) still covers."""
    return topic_filter[:1] in ("+", "#")


def topic_matches(topic_filter: str, topic: str, *, dollar_rule: bool = True) -> bool:
    """MQTT matching of a topic name against a filter.

    With ``dollar_rule`` a filter starting with a wildcard does not match a topic
    starting with ``$`` [MQTT-4.7.2-1]; permission checks turn it off.
    """
    if topic_filter == topic:
        return True
    if dollar_rule and topic.startswith("$") and leads_with_wildcard(topic_filter):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level != "+" and level != t_levels[index]:
            return False
    return len(f_levels) == len(t_levels)


def filter_is_subset(inner: str, outer: str) -> bool:
    """Whether every topic matched by filter ``inner`` is also matched by ``outer`` (no ``$`` rule)."""
    i_levels = inner.split("/")
    o_levels = outer.split("/")
    for index, o_level in enumerate(o_levels):
        if o_level == "#":
            return True
        if index >= len(i_levels):
            return False
        i_level = i_levels[index]
        if i_level == "#":
            return False
        if o_level == "+":
            continue
        if i_level != o_level:
            return False
    return len(i_levels) == len(o_levels)


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic name is matched by both filters."""
    a_levels = a.split("/")
    b_levels = b.split("/")
    for index in range(max(len(a_levels), len(b_levels))):
        x = a_levels[index] if index < len(a_levels) else None
        y = b_levels[index] if index < len(b_levels) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True
