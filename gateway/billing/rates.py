"""Publish rate limits: the user's token bucket and an API key's own, shared across replicas.

``take`` is the hot path: one token of the user's bucket (the plan's rate and
burst) and one of the API key's bucket when the key carries its own limit
(``Principal.key_limit``), or ``RateLimited`` naming which. Tokens taken for a
message refused later are given back. ``charge_remote`` charges what other
replicas spent (``RateShare``) to the same buckets, so one user's rate limit
is one limit, approximately, across replicas.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.billing.limiter import RateLimiter
from gateway.billing.plans import Plan
from gateway.errors import RateLimited
from gateway.metrics import Metrics
from gateway.principal import Principal


def rate_limited(limiter: RateLimiter, key: str, rate: float, burst: float, what: str, limit: str) -> RateLimited:
    """429 naming the ``limit`` (rate, api_key_rate, token_rate), with ``RateLimit-*`` headers and ``retry_after``."""
    state = limiter.state(key, rate, burst)
    return RateLimited(
        f"rate limit exceeded: {what} (burst {burst:g}); retry in {state.retry_after:.2f} s",
        headers=state.headers(),
        details={"limit": limit, "retry_after": round(state.retry_after, 3), "rate": rate, "burst": int(burst)},
    )


class PublishRates:
    def __init__(self, limiter: RateLimiter, metrics: Metrics) -> None:
        self._limiter = limiter
        self._metrics = metrics

    def take(self, claims: Principal, limits: Plan, protocol: str) -> str:
        """One token of the user's bucket and of the API key's own bucket, if it has one (its name, else "")."""
        key = claims.namespace.user_id
        limiter = self._limiter
        if limiter.take(key, limits.rate, limits.burst):
            self._metrics.rejected.labels(protocol, "rate_limited").inc()
            raise rate_limited(limiter, key, limits.rate, limits.burst, f"{limits.rate:g} messages per second", "rate")
        key_limit = claims.key_limit
        if key_limit is None:
            return ""
        key_bucket = f"pub:{claims.key_id}"
        if limiter.take(key_bucket, *key_limit):
            limiter.give_back(key)
            self._metrics.rejected.labels(protocol, "rate_limited").inc()
            raise rate_limited(
                limiter,
                key_bucket,
                key_limit[0],
                key_limit[1],
                f"{key_limit[0]:g} messages per second for this API key",
                "api_key_rate",
            )
        return key_bucket

    def give_back(self, key: str, key_bucket: str) -> None:
        """Return what ``take`` took for a message refused for another reason."""
        self._limiter.give_back(key)
        if key_bucket:
            self._limiter.give_back(key_bucket)

    def charge_remote(self, spent: dict[str, int], limits_of: Callable[[str], Plan | None]) -> None:
        """Charge what another replica spent: per user (at the plan's rate, if known here) or per API key."""
        for user_id, n in spent.items():
            if n <= 0:
                continue
            if user_id.startswith("pub:"):  # an API key's own bucket
                self._limiter.charge_existing(user_id, n)
                continue
            limits = limits_of(user_id)
            if limits is not None:
                self._limiter.charge(user_id, limits.rate, limits.burst, n)
