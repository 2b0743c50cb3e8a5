"""Units reserved from the KV ledger in chunks, spent from memory.

Each account holds an ``allowance`` of units this replica reserved from the
``Ledger`` (compare-and-set) and not spent yet. ``spend`` is the hot path: an
integer decrement, starting a background refill when the allowance runs below
half a chunk. The chunk doubles while refills come within one sync interval
and halves once they are ten intervals apart. Deliveries are ``charge``d even
past zero (a debt paid with the next reservation). Once the ledger has nothing
left the account is blocked for one interval: refusals come from memory and
the ledger is asked again at most once per interval. Unused units go back to
the ledger (``release``, ``give_back``) when the account idles, its limits
change or the month ends; units paid with credits return to the balance.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.billing.cache import MIN_CHUNK, Account, background
from gateway.billing.clock import BillingClock
from gateway.billing.ledger import Ledger
from gateway.billing.meter import Period, iso
from gateway.errors import FlowGateError, PaymentRequired

log = logging.getLogger("flowgate.billing")

MAX_CHUNK = 10_000
IDLE_RELEASE = 4  # sync intervals without use after which unused reserved units go back to the ledger


class Reservations:
    def __init__(self, ledger: Ledger | None, clock: BillingClock, interval: float) -> None:
        self._ledger = ledger
        self._clock = clock
        self._interval = interval

    # -- the hot path -----------------------------------------------------------------------

    def spend(self, account: Account, units: int, period: str, now: float) -> bool:
        """Take ``units`` from the local allowance; False (nothing taken) when it holds fewer."""
        if account.period != period:
            self.new_period(account, period)
        if account.allowance < units:
            return False
        account.allowance -= units
        if account.credit_units > account.allowance:
            account.credit_units = max(0, account.allowance)
        account.last_used = now
        if account.allowance < account.want // 2 and account.refill is None and now >= account.blocked_until:
            self.start_refill(account)
        return True

    def charge(self, account: Account, units: int, period: str) -> None:
        """Take ``units`` whatever is left (deliveries): a negative allowance is a debt the next refill pays."""
        if account.period != period:
            self.new_period(account, period)
        account.allowance -= units
        account.credit_units = max(0, min(account.credit_units, account.allowance))
        if account.allowance < 0 and account.refill is None and self._clock.now() >= account.blocked_until:
            self.start_refill(account)

    def new_period(self, account: Account, period: str) -> None:
        """A new month: units reserved for the old one lapse, except credits, which go back to the balance."""
        old_period, credits = account.period, account.credit_units
        account.period = period
        account.allowance = min(0, account.allowance)
        account.credit_units = 0
        account.blocked_until = 0.0
        if credits and old_period and self._ledger is not None:
            background(self._ledger.release(account.user_id, old_period, 0, credits))

    # -- refills ------------------------------------------------------------------------------

    async def refill_now(self, account: Account, period: Period) -> None:
        """Wait for a refill; ``PaymentRequired`` while the ledger is known to have nothing left."""
        if self._clock.now() < account.blocked_until:
            raise self.payment_required(account, period)
        if account.refill is None:
            self.start_refill(account)
        assert account.refill is not None
        await asyncio.shield(account.refill)

    def start_refill(self, account: Account) -> None:
        account.refill = background(self._refill(account))  # a waiting publish re-raises a failure

    async def _refill(self, account: Account) -> None:
        assert self._ledger is not None
        try:
            period = self._clock.period().id
            if account.period != period:
                self.new_period(account, period)
            now = self._clock.now()
            if account.granted_at and now - account.granted_at < self._interval:
                account.want = min(MAX_CHUNK, account.want * 2)
            elif account.granted_at and now - account.granted_at > 10 * self._interval:
                account.want = max(MIN_CHUNK, account.want // 2)
            debt = max(0, -account.allowance)
            grant = await self._ledger.reserve(account.user_id, period, account.limits.quota, account.want, debt)
            if account.period != period:  # the month changed while we waited: the grant is for the old one
                await self._ledger.release(account.user_id, period, grant.units, grant.credit_units)
                return
            account.allowance += debt + grant.units
            account.credit_units += grant.credit_units
            account.state = grant.state
            account.granted_at = self._clock.now()
            account.blocked_until = account.granted_at + self._interval if grant.units == 0 else 0.0
        except FlowGateError as exc:
            log.warning("could not reserve units for %s: %s", account.user_id, exc)
            raise
        finally:
            account.refill = None

    # -- giving back ------------------------------------------------------------------------------

    async def settle(self, account: Account, now: float) -> bool:
        """The sync's work for one account: pay a debt, or release units unused for ``IDLE_RELEASE``
        intervals; False when there was nothing to do."""
        if account.refill is not None:
            return False
        if account.allowance < 0:
            self.start_refill(account)
            return True
        if account.allowance > 0 and now - account.last_used > IDLE_RELEASE * self._interval:
            try:
                await self.release(account)
            except FlowGateError as exc:
                log.warning("could not release reserved units of %s: %s", account.user_id, exc)
            return True
        return False

    async def release(self, account: Account) -> None:
        """Give the unused reserved units back to the ledger now."""
        if self._ledger is None or account.allowance <= 0 or not account.period:
            return
        await self._give_back(account, *self._take_allowance(account))

    def give_back(self, account: Account) -> None:
        """Give reserved units back (in the background) so the next message is judged by the ledger."""
        if account.allowance > 0 and self._ledger is not None and account.period:
            background(self._give_back(account, *self._take_allowance(account)))

    @staticmethod
    def _take_allowance(account: Account) -> tuple[int, int]:
        units, credits = account.allowance, account.credit_units
        account.allowance = 0
        account.credit_units = 0
        return units, credits

    async def _give_back(self, account: Account, units: int, credits: int) -> None:
        assert self._ledger is not None
        period = account.period
        try:
            await self._ledger.release(account.user_id, period, units, credits)
        except FlowGateError:
            if account.period == period:
                account.allowance += units
                account.credit_units += credits
            raise

    # -- refusal -----------------------------------------------------------------------------------

    @staticmethod
    def payment_required(account: Account, period: Period) -> PaymentRequired:
        quota = account.limits.quota
        used = account.state.used if account.state is not None and account.state.period == period.id else quota
        balance = account.state.credits if account.state is not None else 0
        return PaymentRequired(
            f"monthly quota of {quota} units used and the balance is {balance} credits; "
            f"top up or wait until {iso(period.end)}",
            details={
                "limit": "balance" if used > quota else "monthly_quota",  # beyond the quota, credits were spent
                "used": used,
                "quota": quota,
                "balance": balance,
                "period": period.id,
                "resets_at": iso(period.end),
            },
        )
