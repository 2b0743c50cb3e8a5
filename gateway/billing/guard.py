"""The billing guard and rate limiter every front-end calls.

One ``BillingGuard`` per process, built in ``running_services``. Front-ends use:

- ``await guard.admit(claims, size, protocol=..., operation=...)`` before storing
  a message (``Publisher.publish`` does it for every publish; queues call it with
  ``Operation.QUEUE_SEND``). It raises ``PayloadTooLarge`` (plan's message size),
  ``RateLimited`` (``details["retry_after"]`` in seconds, ``RateLimit-*`` headers)
  or ``PaymentRequired`` (``details``: limit, used, quota, balance, resets_at).
  After a failed store call ``refund`` so the unit is not billed.
- ``guard.record_delivery(namespace, n)`` for messages handed to a subscriber
  (in memory; never refuses: a message accepted is delivered).
- ``await guard.connect(claims, protocol)`` when a subscriber connection opens:
  ``PaymentRequired`` when the quota and balance are spent (MQTT: CONNACK 5) or the
  plan's concurrent connections are in use; ``close()`` the returned handle.
- ``guard.exhausted(user_id)`` (cheap) to end a session once nothing is left.

Hot path: a dict lookup, a token bucket and an integer decrement. Units are
reserved from the KV ledger in chunks (``Ledger.reserve``, compare-and-set) in the
background when the local allowance runs low; the publish only waits for KV
when the allowance is empty. Once the ledger has nothing left, refusals come
from memory and the ledger is asked again at most once per sync interval. A
top-up or plan change applies at once on the replica that took it and is
announced to the others at once (``RateShare.announce_change``; should that
message be lost, they ask the ledger within one sync interval and re-read
plans within ``LIMITS_REFRESH`` intervals).

Rate limits are per replica buckets that also pay for what the other replicas
spent (``RateShare``): approximate across replicas, off by at most what the
others spent during one sync interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auth.accounts import Accounts
from auth.tokens import Claims
from gateway.billing.history import UsageHistory
from gateway.billing.ledger import BILLING_BUCKET, Ledger, LedgerState
from gateway.billing.limiter import RateLimiter
from gateway.billing.meter import Period, UsageMeter, iso
from gateway.billing.plans import Catalog, Operation, Plan
from gateway.billing.share import RateShare
from gateway.bus import Bus
from gateway.errors import FlowGateError, NotFound, PayloadTooLarge, PaymentRequired, RateLimited, Unauthorized
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.topics import Namespace

log = logging.getLogger("flowgate.billing")

MIN_CHUNK = 16
MAX_CHUNK = 10_000
LIMITS_REFRESH = 4  # sync intervals between re-reads of a user's plan
IDLE_RELEASE = 4  # sync intervals without use after which unused reserved units go back to the ledger
FORGET_AFTER = 120.0  # seconds without use after which an account without connections is dropped from memory


@dataclass(eq=False, slots=True)
class _Account:
    user_id: str
    limits: Plan
    loaded_at: float
    period: str = ""
    allowance: int = 0  # reserved units not used yet; negative = deliveries not paid yet
    credit_units: int = 0  # how many of ``allowance`` were paid with credits
    want: int = MIN_CHUNK
    granted_at: float = 0.0
    blocked_until: float = 0.0  # the ledger had nothing left: refuse from memory until then
    last_used: float = 0.0
    state: LedgerState | None = None
    connections: int = 0
    refill: asyncio.Task[None] | None = None
    reload: asyncio.Task[None] | None = None
    remote_connections: dict[str, int] = field(default_factory=dict)
    changed: bool = False  # changed by an admin call here: wait for the reload before judging


class ConnectionLease:
    """One open subscriber connection counted against the plan; ``close`` is idempotent."""

    __slots__ = ("_account", "_guard", "protocol")

    def __init__(self, guard: BillingGuard | None, account: _Account | None, protocol: str) -> None:
        self._guard = guard
        self._account = account
        self.protocol = protocol

    def close(self) -> None:
        account, self._account = self._account, None
        if account is not None and self._guard is not None:
            account.connections -= 1
            account.last_used = self._guard.now()


class BillingGuard:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        accounts: Accounts,
        ledger: Ledger | None,
        meter: UsageMeter | None,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = settings.billing_enabled
        self.catalog = catalog
        self.prices = catalog.prices
        self.interval = settings.billing_sync_interval
        self._refresh = LIMITS_REFRESH * self.interval
        self.limiter = RateLimiter(clock)
        self._settings = settings
        self._accounts_store = accounts
        self._ledger = ledger
        self._meter = meter
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self._accounts: dict[str, _Account] = {}
        self._loading: dict[str, asyncio.Future[_Account]] = {}
        self._orphan_debt: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._price = {op: catalog.prices.of(op) for op in Operation}
        self._current_period = Period.at(wall())
        self._period_bounds = (self._current_period.start.timestamp(), self._current_period.end.timestamp())
        self.share: RateShare | None = None  # set by ``open``: replicas share rate spend and connections

    @classmethod
    async def open(cls, settings: Settings, bus: Bus, accounts: Accounts, metrics: Metrics) -> BillingGuard:
        try:
            catalog = Catalog.load(settings.plans_file, server_max_bytes=settings.max_message_bytes)
        except ValueError as exc:
            raise FlowGateError(f"FLOWGATE_PLANS_FILE: {exc}") from None
        bucket = await bus.bucket(BILLING_BUCKET)
        meter = UsageMeter(bucket, catalog.prices, UsageHistory(bucket, time.time))
        guard = cls(settings, catalog, accounts, Ledger(bucket), meter, metrics)
        if guard.enabled:
            guard.share = RateShare(bus, guard)
            await guard.share.start()
        return guard

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._sync_loop(), name="billing-sync")

    async def close(self) -> None:
        """Stop syncing, give unused reservations back and write the last counts."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.share is not None:
            await self.share.stop()
        try:
            async with asyncio.timeout(max(1.0, self._settings.shutdown_grace_seconds)):
                for account in list(self._accounts.values()):
                    for task in (account.refill, account.reload):
                        if task is not None:
                            await asyncio.gather(task, return_exceptions=True)
                    try:
                        await self._release(account)
                    except FlowGateError as exc:
                        log.warning("could not release reserved units of %s: %s", account.user_id, exc)
                await self._flush()
        except (TimeoutError, FlowGateError) as exc:
            log.warning("billing state not fully written at shutdown: %s", exc or "timeout")

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except FlowGateError as exc:
                log.warning("billing sync failed (will retry): %s", exc)

    async def sync(self) -> None:
        """One round of background work: flush usage, pay debts, release idle reservations, forget idle state."""
        now = self._clock()
        try:
            await self._flush()
        except FlowGateError as exc:
            log.warning("usage not flushed (kept for the next sync): %s", exc)
        for key in list(self._orphan_debt):  # deliveries to users this replica had not loaded yet
            debt = self._orphan_debt.pop(key)
            try:
                account = await self._account(key[0])
            except Unauthorized:
                continue  # the user was deleted
            except FlowGateError:
                self._orphan_debt[key] = self._orphan_debt.get(key, 0) + debt
                raise
            account.allowance -= debt
        for account in list(self._accounts.values()):
            idle = now - account.last_used
            if account.allowance < 0 and account.refill is None:
                self._start_refill(account)
            elif account.allowance > 0 and idle > IDLE_RELEASE * self.interval and account.refill is None:
                try:
                    await self._release(account)
                except FlowGateError as exc:
                    log.warning("could not release reserved units of %s: %s", account.user_id, exc)
            elif (
                idle > FORGET_AFTER
                and account.connections == 0
                and account.allowance == 0
                and account.refill is None
                and account.reload is None
            ):
                del self._accounts[account.user_id]
        self.limiter.sweep()
        if self.share is not None:
            await self.share.send()

    async def _flush(self) -> None:
        if self._meter is not None:
            await self._meter.flush()

    # -- accounts ---------------------------------------------------------------------------

    async def _account(self, user_id: str) -> _Account:
        account = self._accounts.get(user_id)
        if account is not None:
            return account
        pending = self._loading.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Account] = asyncio.get_running_loop().create_future()
        self._loading[user_id] = future
        try:
            limits = await self._read_limits(user_id)
            account = self._accounts.setdefault(user_id, _Account(user_id, limits, self._clock()))
            future.set_result(account)
            return account
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._loading[user_id]

    async def _read_limits(self, user_id: str) -> Plan:
        try:
            user = await self._accounts_store.get_user(user_id)
        except NotFound:
            raise Unauthorized("the token's user no longer exists") from None
        return self.catalog.limits_for(user.plan, user.extra)

    def _start_reload(self, account: _Account) -> None:
        async def reload() -> None:
            try:
                limits = await self._read_limits(account.user_id)
                if limits.quota < account.limits.quota:  # stop spending what was reserved under the old quota
                    self._return_allowance(account)
                account.limits = limits
            except FlowGateError as exc:
                log.debug("keeping the limits of %s: %s", account.user_id, exc)
            finally:
                account.loaded_at = self._clock()
                if account.reload is task:
                    account.reload = None
                    account.changed = False

        task = asyncio.create_task(reload())
        task.add_done_callback(_retrieve)
        account.reload = task

    async def _current(self, user_id: str) -> _Account:
        """The user's account, with limits no older than ``LIMITS_REFRESH`` intervals (re-read in the background)."""
        account = self._accounts.get(user_id)
        if account is None:
            account = await self._account(user_id)
        if account.changed and account.reload is not None:
            await asyncio.shield(account.reload)
        elif account.reload is None and self._clock() - account.loaded_at > self._refresh:
            self._start_reload(account)
        return account

    def invalidate(self, user_id: str) -> None:
        """The user's plan, overrides or balance changed here: use the new values at once."""
        account = self._accounts.get(user_id)
        if account is not None:
            account.blocked_until = 0.0
            account.changed = True
            self._return_allowance(account)
            self._start_reload(account)

    def _return_allowance(self, account: _Account) -> None:
        """Give reserved units back so the next message is judged by the ledger under the current limits."""
        if account.allowance > 0 and self._ledger is not None and account.period:
            task = asyncio.get_running_loop().create_task(self._give_back(account, *self._take_allowance(account)))
            task.add_done_callback(_retrieve)

    async def changed(self, user_id: str) -> None:
        """An admin changed the user's plan, limits or balance: apply it here and tell the other replicas."""
        self.invalidate(user_id)
        if self.share is not None:
            await self.share.announce_change(user_id)

    async def limits(self, user_id: str) -> Plan:
        return (await self._account(user_id)).limits

    # -- the hot path -----------------------------------------------------------------------

    async def admit(
        self, claims: Claims, size: int, *, protocol: str, operation: Operation = Operation.PUBLISH
    ) -> None:
        """Let one message of ``size`` bytes through, or raise; the unit is then reserved for it."""
        if not self.enabled:
            return
        user_id = claims.namespace.user_id
        account = self._accounts.get(user_id)
        now = self._clock()
        if account is None or account.changed or now - account.loaded_at > self._refresh:
            account = await self._current(user_id)
        if self._admit(account, claims, size, protocol, operation, now):
            return
        # The local reservation is spent: several messages may wait for one refill that covers only some of
        # them; the others ask again until the ledger says nothing is left (_refill_now raises PaymentRequired).
        key_bucket = self._take_rate(claims, account.limits, protocol)
        period = self.period()
        price = self._price[operation]
        try:
            while True:
                await self._refill_now(account, period)
                if self._spend(account, price, period.id, self._clock()):
                    break
        except FlowGateError as exc:
            self._return_rate(user_id, key_bucket)
            if isinstance(exc, PaymentRequired):
                self._metrics.rejected.labels(protocol, "payment_required").inc()
            raise
        self._count(claims, key_bucket, period.id, operation)

    def admit_now(self, claims: Claims, size: int, *, protocol: str, operation: Operation = Operation.PUBLISH) -> bool:
        """``admit`` without waiting: True when admitted (or raises as ``admit`` does); False when the
        account must first be loaded or its reservation refilled, which only ``admit`` can do."""
        if not self.enabled:
            return True
        account = self._accounts.get(claims.namespace.user_id)
        now = self._clock()
        if account is None or account.changed or now - account.loaded_at > self._refresh:
            return False
        return self._admit(account, claims, size, protocol, operation, now)

    def _admit(
        self, account: _Account, claims: Claims, size: int, protocol: str, operation: Operation, now: float
    ) -> bool:
        """Size, rate and a unit of the local reservation; False (nothing taken) when the reservation is spent."""
        limits = account.limits
        if size > limits.max_message_bytes:
            self._metrics.rejected.labels(protocol, "payload_too_large").inc()
            raise PayloadTooLarge(
                f"message is {size} bytes; the {limits.name} plan allows {limits.max_message_bytes}",
                details={"limit": "max_message_bytes", "max_message_bytes": limits.max_message_bytes},
            )
        key_bucket = self._take_rate(claims, limits, protocol)
        period = self.period()
        if not self._spend(account, self._price[operation], period.id, now):
            self._return_rate(account.user_id, key_bucket)
            return False
        self._count(claims, key_bucket, period.id, operation)
        return True

    def _take_rate(self, claims: Claims, limits: Plan, protocol: str) -> str:
        """One token of the user's bucket and of the API key's own bucket, if it has one (its name, else "")."""
        key = claims.namespace.user_id
        if self.limiter.take(key, limits.rate, limits.burst):
            self._metrics.rejected.labels(protocol, "rate_limited").inc()
            raise self.rate_limited(key, limits.rate, limits.burst, f"{limits.rate:g} messages per second", "rate")
        key_limit = claims.key_limit
        if key_limit is None:
            return ""
        key_bucket = f"pub:{claims.key_id}"
        if self.limiter.take(key_bucket, *key_limit):
            self.limiter.give_back(key)
            self._metrics.rejected.labels(protocol, "rate_limited").inc()
            raise self.rate_limited(
                key_bucket,
                key_limit[0],
                key_limit[1],
                f"{key_limit[0]:g} messages per second for this API key",
                "api_key_rate",
            )
        return key_bucket

    def _return_rate(self, key: str, key_bucket: str) -> None:
        self.limiter.give_back(key)
        if key_bucket:
            self.limiter.give_back(key_bucket)

    def _count(self, claims: Claims, key_bucket: str, period: str, operation: Operation) -> None:
        """An admitted message: tell the other replicas' rate limiters and the usage meter."""
        namespace = claims.namespace
        if self.share is not None:
            self.share.spent(namespace.user_id)
            if key_bucket:
                self.share.spent(key_bucket)
        if self._meter is not None:
            self._meter.count(period, namespace.user_id, namespace.app, operation)

    def refund(self, claims: Claims, *, operation: Operation = Operation.PUBLISH) -> None:
        """Give back the unit of an admitted message that was not stored after all (or was a duplicate)."""
        if not self.enabled:
            return
        account = self._accounts.get(claims.user_id)
        if account is None:
            return
        account.allowance += self.prices.of(operation)
        if self._meter is not None:
            self._meter.count(account.period, claims.user_id, claims.app, operation, -1)

    def _spend(self, account: _Account, units: int, period: str, now: float) -> bool:
        if account.period != period:
            self._new_period(account, period)
        if account.allowance < units:
            return False
        account.allowance -= units
        if account.credit_units > account.allowance:
            account.credit_units = max(0, account.allowance)
        account.last_used = now
        if account.allowance < account.want // 2 and account.refill is None and now >= account.blocked_until:
            self._start_refill(account)
        return True

    def _new_period(self, account: _Account, period: str) -> None:
        """A new month: units reserved for the old one lapse, except credits, which go back to the balance."""
        old_period, credits = account.period, account.credit_units
        account.period = period
        account.allowance = min(0, account.allowance)
        account.credit_units = 0
        account.blocked_until = 0.0
        if credits and old_period and self._ledger is not None:
            task = asyncio.get_running_loop().create_task(self._ledger.release(account.user_id, old_period, 0, credits))
            task.add_done_callback(_retrieve)

    async def _refill_now(self, account: _Account, period: Period) -> None:
        if self._clock() < account.blocked_until:
            raise self.payment_required(account, period)
        if account.refill is None:
            self._start_refill(account)
        assert account.refill is not None
        await asyncio.shield(account.refill)

    def _start_refill(self, account: _Account) -> None:
        task = asyncio.create_task(self._refill(account))
        task.add_done_callback(_retrieve)  # a background refill's failure is logged; a waiting publish re-raises it
        account.refill = task

    def now(self) -> float:
        return self._clock()

    def period(self) -> Period:
        """The current billing period (recomputed only when the wall clock leaves it)."""
        now = self._wall()
        start, end = self._period_bounds
        if not start <= now < end:
            self._current_period = Period.at(now)
            self._period_bounds = (self._current_period.start.timestamp(), self._current_period.end.timestamp())
        return self._current_period

    async def _refill(self, account: _Account) -> None:
        assert self._ledger is not None
        try:
            period = self.period().id
            if account.period != period:
                self._new_period(account, period)
            now = self._clock()
            if account.granted_at and now - account.granted_at < self.interval:
                account.want = min(MAX_CHUNK, account.want * 2)
            elif account.granted_at and now - account.granted_at > 10 * self.interval:
                account.want = max(MIN_CHUNK, account.want // 2)
            debt = max(0, -account.allowance)
            grant = await self._ledger.reserve(account.user_id, period, account.limits.quota, account.want, debt)
            if account.period != period:  # the month changed while we waited: the grant is for the old one
                await self._ledger.release(account.user_id, period, grant.units, grant.credit_units)
                return
            account.allowance += debt + grant.units
            account.credit_units += grant.credit_units
            account.state = grant.state
            account.granted_at = self._clock()
            account.blocked_until = account.granted_at + self.interval if grant.units == 0 else 0.0
        except FlowGateError as exc:
            log.warning("could not reserve units for %s: %s", account.user_id, exc)
            raise
        finally:
            account.refill = None

    async def _release(self, account: _Account) -> None:
        if self._ledger is None or account.allowance <= 0 or not account.period:
            return
        await self._give_back(account, *self._take_allowance(account))

    @staticmethod
    def _take_allowance(account: _Account) -> tuple[int, int]:
        units, credits = account.allowance, account.credit_units
        account.allowance = 0
        account.credit_units = 0
        return units, credits

    async def _give_back(self, account: _Account, units: int, credits: int) -> None:
        assert self._ledger is not None
        period = account.period
        try:
            await self._ledger.release(account.user_id, period, units, credits)
        except FlowGateError:
            if account.period == period:
                account.allowance += units
                account.credit_units += credits
            raise

    def check_token_request(self, address: str, api_key: str) -> None:
        """``POST /token``: limited per client address and per API key (even when billing is off), against grinding."""
        rate = self._settings.token_rate_per_address
        address_key = f"addr:{address}"
        if self.limiter.take(address_key, rate, rate * 10):
            raise self.rate_limited(
                address_key, rate, int(rate * 10), f"{rate:g} token requests per second per address", "token_rate"
            )
        key_id = api_key[4:20] if api_key.startswith("fgk_") else ""
        if key_id:
            rate = self._settings.token_rate_per_key
            key = f"key:{key_id}"
            if self.limiter.take(key, rate, rate * 10):
                self.limiter.give_back(address_key)
                raise self.rate_limited(
                    key, rate, int(rate * 10), f"{rate:g} token requests per second per API key", "token_rate"
                )

    # -- errors -------------------------------------------------------------------------------

    def rate_limited(self, key: str, rate: float, burst: float, what: str, limit: str) -> RateLimited:
        """429 naming the ``limit`` (rate, api_key_rate, token_rate), with ``RateLimit-*`` headers and ``retry_after``."""
        state = self.limiter.state(key, rate, burst)
        return RateLimited(
            f"rate limit exceeded: {what} (burst {burst:g}); retry in {state.retry_after:.2f} s",
            headers=state.headers(),
            details={"limit": limit, "retry_after": round(state.retry_after, 3), "rate": rate, "burst": int(burst)},
        )

    def payment_required(self, account: _Account, period: Period) -> PaymentRequired:
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

    # -- deliveries and connections ------------------------------------------------------------

    def record_delivery(self, namespace: Namespace, count: int = 1) -> None:
        """Bill ``count`` messages handed to a subscriber of ``namespace`` (in memory, never refuses)."""
        if not self.enabled or count <= 0:
            return
        units = count * self.prices.delivery
        user_id = namespace.user_id
        period = self.period().id
        if self._meter is not None:
            self._meter.count(period, user_id, namespace.app, Operation.DELIVERY, count)
        account = self._accounts.get(user_id)
        if account is None:
            key = (user_id, namespace.app)
            self._orphan_debt[key] = self._orphan_debt.get(key, 0) + units
            return
        if account.period != period:
            self._new_period(account, period)
        account.allowance -= units
        account.credit_units = max(0, min(account.credit_units, account.allowance))
        if account.allowance < 0 and account.refill is None and self._clock() >= account.blocked_until:
            self._start_refill(account)

    def exhausted(self, user_id: str) -> bool:
        """True once this replica knows the user's quota and balance are spent (cheap; for ending sessions)."""
        if not self.enabled:
            return False
        account = self._accounts.get(user_id)
        return account is not None and account.allowance <= 0 and self._clock() < account.blocked_until

    async def check_connect(self, user_id: str) -> None:
        """``PaymentRequired`` if the user has nothing left to spend (MQTT: CONNACK 5)."""
        if not self.enabled:
            return
        account = await self._current(user_id)
        period = self.period()
        if account.period != period.id:
            self._new_period(account, period.id)
        while account.allowance <= 0:
            await self._refill_now(account, period)  # PaymentRequired once the ledger has nothing left

    async def connect(self, claims: Claims, protocol: str) -> ConnectionLease:
        """Count a new subscriber connection; refused when nothing is left or all the plan's connections are open."""
        if not self.enabled:
            return ConnectionLease(None, None, protocol)
        user_id = claims.user_id
        try:
            await self.check_connect(user_id)
        except PaymentRequired:
            self._metrics.rejected.labels(protocol, "payment_required").inc()
            raise
        account = self._accounts[user_id]
        limit = account.limits.max_connections
        open_now = account.connections + sum(account.remote_connections.values())
        if open_now >= limit:
            self._metrics.rejected.labels(protocol, "max_connections").inc()
            raise PaymentRequired(
                f"the {account.limits.name} plan allows {limit} concurrent connections and {open_now} are open",
                details={"limit": "max_connections", "used": open_now, "quota": limit},
            )
        account.connections += 1
        account.last_used = self._clock()
        return ConnectionLease(self, account, protocol)

    # -- reporting and administration -----------------------------------------------------------

    async def top_up(self, user_id: str, amount: int) -> LedgerState:
        await self._accounts_store.get_user(user_id)
        assert self._ledger is not None
        state = await self._ledger.top_up(user_id, self.period().id, amount)
        await self.changed(user_id)
        account = self._accounts.get(user_id)
        if account is not None:
            account.state = state
        return state

    async def usage(self, user_id: str, app: str | None = None) -> dict[str, Any]:
        """What ``GET /api/v1/usage`` answers (``app``: the token's app, whose counts are ``app_usage``)."""
        assert self._ledger is not None and self._meter is not None
        account = await self._account(user_id)
        limits = account.limits
        period = self.period()
        state = await self._ledger.read(user_id, period.id)
        by_app = await self._meter.stored(period.id, user_id)
        for name_of_app, counts in self._meter.pending(period.id, user_id).items():
            stored = by_app.setdefault(name_of_app, dict.fromkeys(counts, 0))
            for name, n in counts.items():
                stored[name] = stored.get(name, 0) + n
        used = sum(counts.get("units", 0) for counts in by_app.values())
        this_app = by_app.get(app or "", {})
        rate = self.limiter.state(user_id, limits.rate, limits.burst) if self.enabled else None
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
            "connections": account.connections + sum(account.remote_connections.values()),
            "prices": {op.value: self.prices.of(op) for op in Operation},
            "enforced": self.enabled,
        }

    async def usage_history(self, user_id: str) -> dict[str, Any]:
        """What ``GET /api/v1/usage/history`` answers: units per hour (last 48 h) and per day (this period)."""
        assert self._meter is not None and self._meter.history is not None
        return await self._meter.history.read(user_id)

    # -- for RateShare -----------------------------------------------------------------------------

    def apply_remote(self, replica: str, spent: dict[str, int], connections: dict[str, int] | None) -> None:
        """Another replica spent ``spent`` rate tokens per user and holds ``connections`` (``None``: unchanged)."""
        for user_id, n in spent.items():
            if n <= 0:
                continue
            if user_id.startswith("pub:"):  # an API key's own bucket
                self.limiter.charge_existing(user_id, n)
                continue
            account = self._accounts.get(user_id)
            if account is not None:
                self.limiter.charge(user_id, account.limits.rate, account.limits.burst, n)
        if connections is None:
            return
        for account in self._accounts.values():
            count = connections.get(account.user_id, 0)
            if count:
                account.remote_connections[replica] = count
            else:
                account.remote_connections.pop(replica, None)

    def local_connections(self) -> dict[str, int]:
        return {a.user_id: a.connections for a in self._accounts.values() if a.connections}


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
