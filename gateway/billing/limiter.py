"""Token buckets keyed by any string, on an injected monotonic clock.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each
operation takes one. A bucket that has refilled completely is the same as no
bucket, so ``sweep`` forgets it: memory follows the number of recently active
keys, not the number ever seen. ``charge`` takes tokens without asking (what
other replicas spent), letting a bucket go into debt down to ``-burst``.
Nothing here awaits or reads the wall clock, so tests drive it with a fake
clock and no sleeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9  # float refill arithmetic must not turn 2 tokens into 1.9999999


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    rate: float
    burst: float


@dataclass(frozen=True, slots=True)
class RateState:
    """What the ``RateLimit-*`` headers say about a bucket."""

    limit: int  # the burst: requests allowed at once
    remaining: int  # whole tokens left now
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one more token (0 if one is there)

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(max(1, math.ceil(self.reset))),
        }


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, key: str, rate: float, burst: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now, rate, burst)
            return bucket
        if bucket.rate != rate or bucket.burst != burst:  # the plan changed: keep the level, cap at the new size
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)
        elapsed = now - bucket.updated
        if elapsed > 0:
            bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
            bucket.updated = now
        return bucket

    def take(self, key: str, rate: float, burst: float, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 if taken, otherwise the seconds until they would be there (nothing taken)."""
        bucket = self._refill(key, rate, burst, self._clock())
        if bucket.tokens + _EPSILON >= n:
            bucket.tokens -= n
            return 0.0
        return (n - bucket.tokens) / rate

    def peek(self, key: str, rate: float, burst: float, n: float = 1.0) -> float:
        """Like ``take`` but takes nothing."""
        bucket = self._refill(key, rate, burst, self._clock())
        return 0.0 if bucket.tokens + _EPSILON >= n else (n - bucket.tokens) / rate

    def give_back(self, key: str, n: float = 1.0) -> None:
        """Return tokens taken for an operation that was refused for another reason."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + n)

    def charge(self, key: str, rate: float, burst: float, n: float) -> None:
        """Take ``n`` tokens unconditionally (spent elsewhere); the bucket may go into debt down to ``-burst``."""
        bucket = self._refill(key, rate, burst, self._clock())
        bucket.tokens = max(-burst, bucket.tokens - n)

    def charge_existing(self, key: str, n: float) -> None:
        """``charge`` a bucket at its own rate and size, if there is one (nothing to do otherwise)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            self.charge(key, bucket.rate, bucket.burst, n)

    def state(self, key: str, rate: float, burst: float) -> RateState:
        bucket = self._refill(key, rate, burst, self._clock())
        missing = burst - bucket.tokens
        return RateState(
            limit=int(burst),
            remaining=max(0, int(bucket.tokens + _EPSILON)),
            reset=max(0.0, missing / rate),
            retry_after=max(0.0, (1 - bucket.tokens) / rate),
        )

    def sweep(self) -> int:
        """Forget buckets that have refilled completely; the number forgotten."""
        now = self._clock()
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * b.rate >= b.burst]
        for key in full:
            del self._buckets[key]
        return len(full)
