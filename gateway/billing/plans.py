"""Plans, per-user overrides and unit prices: what a user may do and what it costs.

A plan sets the monthly quota (in units), the publish rate (a token bucket:
``rate`` per second refilling up to ``burst``), the maximum number of concurrent
subscriber connections and the largest message. The built-in plans are
``free`` and ``pro``; ``FLOWGATE_PLANS_FILE`` (JSON) may replace them and add
others, and may set the unit prices::

    {"plans": {"free": {"quota": 1000, "rate": 5, "burst": 10, ...}, ...},
     "prices": {"publish": 1, "queue_send": 1, "delivery": 1}}

A user's ``extra["limits"]`` overrides single fields of their plan. Billable
operations cost units: one published message (any protocol), one queue message
sent, one message delivered to a subscriber. The monthly quota is the number
of units included; beyond it each unit draws one credit from the prepaid
balance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import BadRequest


class Operation(StrEnum):
    """A billable operation."""

    PUBLISH = "publish"
    QUEUE_SEND = "queue_send"
    DELIVERY = "delivery"


@dataclass(frozen=True, kw_only=True, slots=True)
class Prices:
    """Units charged per operation (one unit = one credit once the quota is spent)."""

    publish: int = 1
    queue_send: int = 1
    delivery: int = 1

    def of(self, operation: Operation) -> int:
        value: int = getattr(self, operation.value)
        return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """The limits of one plan (or of one user: a plan with overrides applied)."""

    name: str
    quota: int  # units included per billing period (calendar month, UTC)
    rate: float  # sustained publishes per second
    burst: int  # publishes allowed at once (the bucket's size)
    max_connections: int  # concurrent subscriber connections (SSE, WebSocket, MQTT)
    max_message_bytes: int  # largest message payload

    def with_overrides(self, overrides: dict[str, Any]) -> Plan:
        return dataclasses.replace(self, **_validated(overrides, partial=True))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OVERRIDABLE = ("quota", "rate", "burst", "max_connections", "max_message_bytes")
_LIMITS: dict[str, tuple[type, float, float]] = {
    "quota": (int, 0, 10**15),
    "rate": (float, 0.001, 10**7),
    "burst": (int, 1, 10**8),
    "max_connections": (int, 0, 10**8),
    "max_message_bytes": (int, 1, 2**31),
}

DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "free": {"quota": 6_000_000, "rate": 500, "burst": 1000, "max_connections": 200, "max_message_bytes": 256 * 1024},
    "pro": {
        "quota": 100_000_000,
        "rate": 10_000,
        "burst": 20_000,
        "max_connections": 10_000,
        "max_message_bytes": 64 * 1024 * 1024,
    },
}


def _validated(values: Any, *, partial: bool) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise BadRequest("limits must be an object")
    unknown = set(values) - set(OVERRIDABLE)
    if unknown:
        raise BadRequest(f"unknown limit(s): {', '.join(sorted(unknown))}; known: {', '.join(OVERRIDABLE)}")
    missing = [] if partial else [k for k in OVERRIDABLE if k not in values]
    if missing:
        raise BadRequest(f"missing limit(s): {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind, lo, hi = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise BadRequest(f"limit {key} must be {'an integer' if kind is int else 'a number'}")
        if not lo <= value <= hi:
            raise BadRequest(f"limit {key} must be between {lo:g} and {hi:g}")
        out[key] = kind(value)
    return out


def validate_overrides(values: Any) -> dict[str, Any]:
    """Check a (partial) set of per-user limit overrides."""
    return _validated(values, partial=True)


@dataclass(frozen=True)
class Catalog:
    """The configured plans and prices."""

    plans: dict[str, Plan]
    prices: Prices

    @classmethod
    def load(cls, path: Path | None, *, server_max_bytes: int) -> Catalog:
        """The built-in plans, or those of the JSON file at ``path``; sizes capped at the server's maximum."""
        document: dict[str, Any] = {"plans": DEFAULT_PLANS}
        if path is not None:
            try:
                document = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"cannot read plans file {path}: {exc}") from None
            if not isinstance(document, dict) or not isinstance(document.get("plans"), dict) or not document["plans"]:
                raise ValueError(f"plans file {path} must be an object with a non-empty 'plans' object")
        plans = {}
        for name, values in document["plans"].items():
            try:
                limits = _validated(values, partial=False)
            except BadRequest as exc:
                raise ValueError(f"plan {name!r}: {exc.message}") from None
            limits["max_message_bytes"] = min(limits["max_message_bytes"], server_max_bytes)
            plans[name] = Plan(name=name, **limits)
        prices = document.get("prices", {})
        if not isinstance(prices, dict) or set(prices) - {op.value for op in Operation}:
            raise ValueError("'prices' must be an object with publish, queue_send and/or delivery")
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10**6 for v in prices.values()):
            raise ValueError("prices must be integers between 0 and 1000000")
        return cls(plans, Prices(**prices))

    def plan(self, name: str) -> Plan:
        """The plan ``name``; an unknown name (a plan removed from the file) falls back to the first plan."""
        found = self.plans.get(name)
        return found if found is not None else next(iter(self.plans.values()))

    def check_name(self, name: str) -> str:
        if name not in self.plans:
            raise BadRequest(f"unknown plan {name!r}; configured: {', '.join(self.plans)}")
        return name

    def limits_for(self, plan: str, extra: dict[str, Any]) -> Plan:
        """The effective limits of a user on ``plan`` with ``extra["limits"]`` overrides."""
        base = self.plan(plan)
        overrides = extra.get("limits")
        if not overrides:
            return base
        try:
            return base.with_overrides(overrides)
        except BadRequest:
            return base
