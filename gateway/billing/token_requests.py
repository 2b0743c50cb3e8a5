"""``POST /token`` throttling against grinding: per client address and per API key, even with billing off."""

from __future__ import annotations

from gateway.billing.limiter import RateLimiter
from gateway.billing.rates import rate_limited
from gateway.settings import Settings


class TokenRequests:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self._limiter = limiter
        self._per_address = settings.token_rate_per_address
        self._per_key = settings.token_rate_per_key

    def check(self, address: str, api_key: str) -> None:
        """``RateLimited`` (limit ``token_rate``) when the address or the key (``fgk_<id>...``) asks too often."""
        limiter = self._limiter
        rate = self._per_address
        address_key = f"addr:{address}"
        if limiter.take(address_key, rate, rate * 10):
            raise rate_limited(
                limiter,
                address_key,
                rate,
                int(rate * 10),
                f"{rate:g} token requests per second per address",
                "token_rate",
            )
        key_id = api_key[4:20] if api_key.startswith("fgk_") else ""
        if key_id:
            rate = self._per_key
            key = f"key:{key_id}"
            if limiter.take(key, rate, rate * 10):
                limiter.give_back(address_key)
                raise rate_limited(
                    limiter, key, rate, int(rate * 10), f"{rate:g} token requests per second per API key", "token_rate"
                )
