"""What ``GET /api/v1/usage`` and ``/usage/history`` answer: the ledger, the meter and this replica's state."""

from __future__ import annotations

from typing import Any

from gateway.billing.cache import AccountCache
from gateway.billing.clock import BillingClock
from gateway.billing.connections import Connections
from gateway.billing.ledger import Ledger
from gateway.billing.limiter import RateLimiter
from gateway.billing.meter import UsageMeter, iso
from gateway.billing.plans import Operation, Prices


class UsageReport:
    def __init__(
        self,
        accounts: AccountCache,
        ledger: Ledger | None,
        meter: UsageMeter | None,
        limiter: RateLimiter,
        clock: BillingClock,
        prices: Prices,
        *,
        enforced: bool,
    ) -> None:
        self._accounts = accounts
        self._ledger = ledger
        self._meter = meter
        self._limiter = limiter
        self._clock = clock
        self._prices = prices
        self._enforced = enforced

    async def usage(self, user_id: str, app: str | None = None) -> dict[str, Any]:
        """The period's use, limits and balance (``app``: the token's app, whose counts are ``app_usage``)."""
        assert self._ledger is not None and self._meter is not None
        account = await self._accounts.load(user_id)
        limits = account.limits
        period = self._clock.period()
        state = await self._ledger.read(user_id, period.id)
        by_app = await self._meter.usage(period.id, user_id)
        used = sum(counts.get("units", 0) for counts in by_app.values())
        this_app = by_app.get(app or "", {})
        rate = self._limiter.state(user_id, limits.rate, limits.burst) if self._enforced else None
        local_credits = account.credit_units if account.period == period.id else 0
        return {
            "user_id": user_id,
            "app": app,
            "plan": limits.name,
            "period": {"id": period.id, "start": iso(period.start), "end": iso(period.end)},
            "used": used,
            "quota": limits.quota,
            "remaining": max(0, limits.quota - used) + state.credits + local_credits,
            "balance": state.credits + local_credits,
            "resets_at": iso(period.end),
            "app_usage": {k: this_app.get(k, 0) for k in ("publish", "queue_send", "delivery", "units")},
            "apps": by_app,
            "rate_limit": {
                "rate": limits.rate,
                "burst": limits.burst,
                "remaining": rate.remaining if rate else limits.burst,
                "reset": round(rate.reset, 3) if rate else 0,
            },
            "limits": {"max_connections": limits.max_connections, "max_message_bytes": limits.max_message_bytes},
            "connections": Connections.count(account),
            "prices": {op.value: self._prices.of(op) for op in Operation},
            "enforced": self._enforced,
        }

    async def usage_history(self, user_id: str) -> dict[str, Any]:
        """Units per hour (last 48 h) and per day (this period)."""
        assert self._meter is not None and self._meter.history is not None
        return await self._meter.history.read(user_id)
