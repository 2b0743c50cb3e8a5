"""The hot path: whether one message (or one subscriber connection) may go through, and what it costs.

``admit_now`` decides from memory (size, rate, a unit of the local reservation)
or says it cannot without waiting; ``admit`` may wait for the account to load
or for a refill from the ledger. An admitted message is counted in the usage
meter and in the spend other replicas hear of. ``refund`` gives the unit back
for a message not stored after all; ``record_delivery`` bills messages handed
to subscribers, which is never refused (a delivery to a user not loaded here
is kept as a debt until the next sync).
"""

from __future__ import annotations

from typing import Protocol

from gateway.billing.cache import Account, AccountCache
from gateway.billing.clock import BillingClock
from gateway.billing.meter import UsageMeter
from gateway.billing.plans import Operation, Prices
from gateway.billing.rates import PublishRates
from gateway.billing.reservations import Reservations
from gateway.errors import FlowGateError, PayloadTooLarge, PaymentRequired, Unauthorized
from gateway.metrics import Metrics
from gateway.principal import Principal
from gateway.topics import Namespace


class Spending(Protocol):
    """Where rate tokens taken here are counted for the other replicas (``RateShare.spent``)."""

    def spent(self, user_id: str, n: int = 1) -> None: ...


class Admission:
    def __init__(
        self,
        accounts: AccountCache,
        reservations: Reservations,
        rates: PublishRates,
        clock: BillingClock,
        prices: Prices,
        meter: UsageMeter | None,
        metrics: Metrics,
    ) -> None:
        self._accounts = accounts
        self._reservations = reservations
        self._rates = rates
        self._clock = clock
        self._prices = prices
        self._price = {op: prices.of(op) for op in Operation}
        self._meter = meter
        self._metrics = metrics
        self._orphan_debt: dict[tuple[str, str], int] = {}
        self.spending: Spending | None = None  # set once replicas share their spend
        # the hot path's calls, bound once
        self._fresh = accounts.fresh
        self._now = clock.now
        self._period = clock.period
        self._take = rates.take
        self._spend = reservations.spend

    async def admit(self, claims: Principal, size: int, protocol: str, operation: Operation) -> None:
        """Let one message of ``size`` bytes through, or raise; the unit is then reserved for it."""
        user_id = claims.namespace.user_id
        now = self._now()
        account = self._fresh(user_id, now)
        if account is None:
            account = await self._accounts.current(user_id)
        if self._admit(account, claims, size, protocol, operation, now):
            return
        # The local reservation is spent: several messages may wait for one refill that covers only some of
        # them; the others ask again until the ledger says nothing is left (refill_now raises PaymentRequired).
        key_bucket = self._rates.take(claims, account.limits, protocol)
        period = self._clock.period()
        price = self._price[operation]
        try:
            while True:
                await self._reservations.refill_now(account, period)
                if self._reservations.spend(account, price, period.id, self._clock.now()):
                    break
        except FlowGateError as exc:
            self._rates.give_back(user_id, key_bucket)
            if isinstance(exc, PaymentRequired):
                self._metrics.rejected.labels(protocol, "payment_required").inc()
            raise
        self._count(claims, key_bucket, period.id, operation)

    def admit_now(self, claims: Principal, size: int, protocol: str, operation: Operation) -> bool:
        """``admit`` without waiting: True when admitted (or raises as ``admit`` does); False when the
        account must first be loaded or its reservation refilled, which only ``admit`` can do."""
        now = self._now()
        account = self._fresh(claims.namespace.user_id, now)
        if account is None:
            return False
        return self._admit(account, claims, size, protocol, operation, now)

    def _admit(
        self, account: Account, claims: Principal, size: int, protocol: str, operation: Operation, now: float
    ) -> bool:
        """Size, rate and a unit of the local reservation; False (nothing taken) when the reservation is spent."""
        limits = account.limits
        if size > limits.max_message_bytes:
            self._metrics.rejected.labels(protocol, "payload_too_large").inc()
            raise PayloadTooLarge(
                f"message is {size} bytes; the {limits.name} plan allows {limits.max_message_bytes}",
                details={"limit": "max_message_bytes", "max_message_bytes": limits.max_message_bytes},
            )
        key_bucket = self._take(claims, limits, protocol)
        period = self._period()
        if not self._spend(account, self._price[operation], period.id, now):
            self._rates.give_back(account.user_id, key_bucket)
            return False
        self._count(claims, key_bucket, period.id, operation)
        return True

    def _count(self, claims: Principal, key_bucket: str, period: str, operation: Operation) -> None:
        """An admitted message: tell the other replicas' rate limiters and the usage meter."""
        namespace = claims.namespace
        if self.spending is not None:
            self.spending.spent(namespace.user_id)
            if key_bucket:
                self.spending.spent(key_bucket)
        if self._meter is not None:
            self._meter.count(period, namespace.user_id, namespace.app, operation)

    def refund(self, claims: Principal, operation: Operation) -> None:
        """Give back the unit of an admitted message that was not stored after all (or was a duplicate)."""
        account = self._accounts.get(claims.user_id)
        if account is None:
            return
        account.allowance += self._prices.of(operation)
        if self._meter is not None:
            self._meter.count(account.period, claims.user_id, claims.app, operation, -1)

    def record_delivery(self, namespace: Namespace, count: int) -> None:
        """Bill ``count`` messages handed to a subscriber of ``namespace`` (in memory, never refuses)."""
        units = count * self._prices.delivery
        user_id = namespace.user_id
        period = self._clock.period().id
        if self._meter is not None:
            self._meter.count(period, user_id, namespace.app, Operation.DELIVERY, count)
        account = self._accounts.get(user_id)
        if account is None:
            key = (user_id, namespace.app)
            self._orphan_debt[key] = self._orphan_debt.get(key, 0) + units
            return
        self._reservations.charge(account, units, period)

    async def settle_debts(self) -> None:
        """Charge deliveries to users this replica had not loaded yet (the sync's first step)."""
        for key in list(self._orphan_debt):
            debt = self._orphan_debt.pop(key)
            try:
                account = await self._accounts.load(key[0])
            except Unauthorized:
                continue  # the user was deleted
            except FlowGateError:
                self._orphan_debt[key] = self._orphan_debt.get(key, 0) + debt
                raise
            account.allowance -= debt

    def exhausted(self, user_id: str) -> bool:
        """True once this replica knows the user's quota and balance are spent (cheap; for ending sessions)."""
        account = self._accounts.get(user_id)
        return account is not None and account.allowance <= 0 and self._clock.now() < account.blocked_until

    async def check_connect(self, user_id: str) -> Account:
        """The user's account once it has a unit to spend; ``PaymentRequired`` if nothing is left."""
        account = await self._accounts.current(user_id)
        period = self._clock.period()
        if account.period != period.id:
            self._reservations.new_period(account, period.id)
        while account.allowance <= 0:
            await self._reservations.refill_now(account, period)  # PaymentRequired once the ledger has nothing left
        return account
