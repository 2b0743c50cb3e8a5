"""Who is acting: the view of a verified token that the core reads, as protocols.

The core never imports ``auth``. Publishing, queues, billing, webhooks and
triggers read a caller's namespace, API key and topic rules through
``Principal``; ``auth.tokens.Claims`` (with ``auth.permissions.Permissions``
and ``Rule``) satisfies it structurally, and the front-ends pass their verified
claims in. ``Owner`` is the namespace's owner acting through the gateway itself
(an inbound trigger's publish, a webhook's dead-letter queue): every topic, no
API key, like a token with the default permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.topics import Namespace


class TopicRule(Protocol):
    """One direction's permission (publish or subscribe) as short-name MQTT-style filters."""

    @property
    def deny(self) -> tuple[str, ...]: ...

    def permits_topic(self, topic: str) -> bool: ...

    def permits_filter(self, topic_filter: str) -> bool: ...

    def hides(self, topic: str) -> bool:
        """Whether a message on ``topic`` must be withheld from a subscriber under this rule."""
        ...


class Grants(Protocol):
    @property
    def publish(self) -> TopicRule: ...

    @property
    def subscribe(self) -> TopicRule: ...


class Principal(Protocol):
    @property
    def namespace(self) -> Namespace: ...

    @property
    def user_id(self) -> str: ...

    @property
    def app(self) -> str: ...

    @property
    def key_id(self) -> str | None:
        """The API key the token was issued from (its own rate-limit bucket)."""
        ...

    @property
    def key_limit(self) -> tuple[float, int] | None:
        """That key's (rate, burst), when it has its own rate limit."""
        ...

    @property
    def permissions(self) -> Grants: ...


@dataclass(frozen=True, slots=True)
class AnyTopic:
    """A rule that permits every topic and filter and hides none."""

    deny: tuple[str, ...] = ()

    def permits_topic(self, topic: str) -> bool:
        return True

    def permits_filter(self, topic_filter: str) -> bool:
        return True

    def hides(self, topic: str) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class AllGrants:
    publish: AnyTopic = AnyTopic()
    subscribe: AnyTopic = AnyTopic()


@dataclass(frozen=True, slots=True)
class Owner:
    """The namespace's owner acting through the gateway: every permission, the user's own rate limit."""

    namespace: Namespace
    permissions: AllGrants = AllGrants()
    key_id: str | None = None
    key_limit: tuple[float, int] | None = None

    @property
    def user_id(self) -> str:
        return self.namespace.user_id

    @property
    def app(self) -> str:
        return self.namespace.app
