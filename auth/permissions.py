"""What a token may publish and subscribe to, as short-name MQTT-style filters.

``{"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}}``; the default
is everything in the token's namespace. Publishing to a topic needs an allow
filter matching it and no deny filter matching it. Subscribing to a filter needs
an allow filter covering it entirely and no deny filter covering it entirely;
messages on topics a deny filter matches are then withheld from that
subscriber (the way NATS treats subscribe permissions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, FlowGateError
from gateway.topics import filter_is_subset, topic_matches, validate_filter

MAX_FILTERS = 64


@dataclass(frozen=True, slots=True)
class Rule:
    allow: tuple[str, ...] = ("#",)
    deny: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, value: Any, what: str) -> Rule:
        if value is None:
            return cls()
        if not isinstance(value, dict) or set(value) - {"allow", "deny"}:
            raise BadRequest(f"permissions.{what} must be an object with 'allow' and/or 'deny' lists")
        allow = cls._filters(value.get("allow", ["#"]), f"{what}.allow")
        deny = cls._filters(value.get("deny", []), f"{what}.deny")
        return cls(allow, deny)

    @staticmethod
    def _filters(value: Any, what: str) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) > MAX_FILTERS:
            raise BadRequest(f"permissions.{what} must be a list of at most {MAX_FILTERS} filters")
        try:
            return tuple(validate_filter(item) for item in value)
        except FlowGateError as exc:
            raise BadRequest(f"permissions.{what}: {exc.message}") from None

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": list(self.allow), "deny": list(self.deny)}

    @property
    def unrestricted(self) -> bool:
        return self.allow == ("#",) and not self.deny

    def permits_topic(self, topic: str) -> bool:
        if self.unrestricted:
            return True
        return any(topic_matches(f, topic, dollar_rule=False) for f in self.allow) and not self.hides(topic)

    def permits_filter(self, topic_filter: str) -> bool:
        if self.unrestricted:
            return True
        return any(filter_is_subset(topic_filter, f) for f in self.allow) and not any(
            filter_is_subset(topic_filter, f) for f in self.deny
        )

    def hides(self, topic: str) -> bool:
        """Whether a message on ``topic`` must be withheld from a subscriber under this rule."""
        if not self.deny:
            return False  # the common case, on the delivery path: no generator to build
        return any(topic_matches(f, topic, dollar_rule=False) for f in self.deny)


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: Rule = Rule()
    subscribe: Rule = Rule()

    @classmethod
    def from_json(cls, value: Any) -> Permissions:
        if value is None:
            return cls()
        if not isinstance(value, dict) or set(value) - {"publish", "subscribe"}:
            raise BadRequest("permissions must be an object with 'publish' and/or 'subscribe'")
        return cls(Rule.from_json(value.get("publish"), "publish"), Rule.from_json(value.get("subscribe"), "subscribe"))

    def to_json(self) -> dict[str, Any]:
        return {"publish": self.publish.to_json(), "subscribe": self.subscribe.to_json()}
