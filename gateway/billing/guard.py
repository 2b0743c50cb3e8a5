"""The billing guard and rate limiter every front-end calls: one facade over the billing concerns.

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

Each concern is a small class in its own module: ``cache`` (accounts and their
limits), ``admission`` (the hot path), ``reservations`` (units reserved from the
KV ledger in chunks), ``rates`` (per-user and per-key token buckets),
``token_requests`` (``POST /token`` throttling), ``connections`` (leases and
other replicas' counts), ``report`` (the usage answer) and ``peers`` (what
``RateShare`` tells and hears). This class builds them, runs the background sync
and keeps the methods front-ends call.

Hot path: a dict lookup, a token bucket and an integer decrement. Units are
reserved from the KV ledger in the background when the local allowance runs
low; the publish only waits for KV when the allowance is empty. A top-up or
plan change applies at once on the replica that took it and is announced to
the others at once (``RateShare.announce_change``; should that message be
lost, they ask the ledger within one sync interval and re-read plans within
``LIMITS_REFRESH`` intervals). Rate limits are per replica buckets that also
pay for what the other replicas spent: approximate across replicas, off by at
most what the others spent during one sync interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.billing.admission import Admission
from gateway.billing.cache import FORGET_AFTER, LIMITS_REFRESH, AccountCache, Users
from gateway.billing.clock import BillingClock
from gateway.billing.connections import ConnectionLease, Connections
from gateway.billing.history import UsageHistory
from gateway.billing.ledger import BILLING_BUCKET, Ledger, LedgerState
from gateway.billing.limiter import RateLimiter
from gateway.billing.meter import Period, UsageMeter
from gateway.billing.peers import Peers
from gateway.billing.plans import Catalog, Operation, Plan
from gateway.billing.rates import PublishRates, rate_limited
from gateway.billing.report import UsageReport
from gateway.billing.reservations import Reservations
from gateway.billing.share import RateShare
from gateway.billing.token_requests import TokenRequests
from gateway.bus import Bus
from gateway.errors import FlowGateError, PaymentRequired, RateLimited
from gateway.metrics import Metrics
from gateway.principal import Principal
from gateway.settings import Settings
from gateway.topics import Namespace

__all__ = ["BillingGuard", "ConnectionLease"]

log = logging.getLogger("flowgate.billing")


class BillingGuard:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        accounts: Users,
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
        self.limiter = RateLimiter(clock)
        self._settings = settings
        self._users = accounts
        self._ledger = ledger
        self._meter = meter
        self._metrics = metrics
        self._clock = BillingClock(clock, wall)
        self._reservations = Reservations(ledger, self._clock, self.interval)
        self._accounts = AccountCache(
            accounts, catalog, clock, LIMITS_REFRESH * self.interval, self._reservations.give_back
        )
        rates = PublishRates(self.limiter, metrics)
        self._admission = Admission(
            self._accounts, self._reservations, rates, self._clock, catalog.prices, meter, metrics
        )
        self._connections = Connections(self._accounts, clock, metrics)
        self._token_requests = TokenRequests(self.limiter, settings)
        self._report = UsageReport(
            self._accounts, ledger, meter, self.limiter, self._clock, catalog.prices, enforced=self.enabled
        )
        self.peers = Peers(self._accounts, rates, self._connections, clock, self.interval)
        self._task: asyncio.Task[None] | None = None
        self.share: RateShare | None = None  # set by ``open``: replicas share rate spend and connections

    @classmethod
    async def open(cls, settings: Settings, bus: Bus, accounts: Users, metrics: Metrics) -> BillingGuard:
        try:
            catalog = Catalog.load(settings.plans_file, server_max_bytes=settings.max_message_bytes)
        except ValueError as exc:
            raise FlowGateError(f"FLOWGATE_PLANS_FILE: {exc}") from None
        bucket = await bus.bucket(BILLING_BUCKET)
        meter = UsageMeter(bucket, catalog.prices, UsageHistory(bucket, time.time))
        guard = cls(settings, catalog, accounts, Ledger(bucket), meter, metrics)
        if guard.enabled:
            guard.share = RateShare(bus, guard.peers)
            guard._admission.spending = guard.share
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
                for account in self._accounts.all():
                    for task in (account.refill, account.reload):
                        if task is not None:
                            await asyncio.gather(task, return_exceptions=True)
                    try:
                        await self._reservations.release(account)
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
        now = self._clock.now()
        try:
            await self._flush()
        except FlowGateError as exc:
            log.warning("usage not flushed (kept for the next sync): %s", exc)
        await self._admission.settle_debts()
        for account in self._accounts.all():
            if await self._reservations.settle(account, now):
                continue
            if (
                now - account.last_used > FORGET_AFTER
                and account.connections == 0
                and account.allowance == 0
                and account.refill is None
                and account.reload is None
            ):
                self._accounts.forget(account)
        self.limiter.sweep()
        if self.share is not None:
            await self.share.send()

    async def _flush(self) -> None:
        if self._meter is not None:
            await self._meter.flush()

    # -- the hot path -----------------------------------------------------------------------

    async def admit(
        self, claims: Principal, size: int, *, protocol: str, operation: Operation = Operation.PUBLISH
    ) -> None:
        """Let one message of ``size`` bytes through, or raise; the unit is then reserved for it."""
        if self.enabled:
            await self._admission.admit(claims, size, protocol, operation)

    def admit_now(
        self, claims: Principal, size: int, *, protocol: str, operation: Operation = Operation.PUBLISH
    ) -> bool:
        """``admit`` without waiting: True when admitted (or raises as ``admit`` does); False when the
        account must first be loaded or its reservation refilled, which only ``admit`` can do."""
        return not self.enabled or self._admission.admit_now(claims, size, protocol, operation)

    def refund(self, claims: Principal, *, operation: Operation = Operation.PUBLISH) -> None:
        """Give back the unit of an admitted message that was not stored after all (or was a duplicate)."""
        if self.enabled:
            self._admission.refund(claims, operation)

    def record_delivery(self, namespace: Namespace, count: int = 1) -> None:
        """Bill ``count`` messages handed to a subscriber of ``namespace`` (in memory, never refuses)."""
        if self.enabled and count > 0:
            self._admission.record_delivery(namespace, count)

    def exhausted(self, user_id: str) -> bool:
        """True once this replica knows the user's quota and balance are spent (cheap; for ending sessions)."""
        return self.enabled and self._admission.exhausted(user_id)

    # -- connections ----------------------------------------------------------------------------

    async def check_connect(self, user_id: str) -> None:
        """``PaymentRequired`` if the user has nothing left to spend (MQTT: CONNACK 5)."""
        if self.enabled:
            await self._admission.check_connect(user_id)

    async def connect(self, claims: Principal, protocol: str) -> ConnectionLease:
        """Count a new subscriber connection; refused when nothing is left or all the plan's connections are open."""
        if not self.enabled:
            return ConnectionLease(None, None, protocol)
        try:
            account = await self._admission.check_connect(claims.user_id)
        except PaymentRequired:
            self._metrics.rejected.labels(protocol, "payment_required").inc()
            raise
        return self._connections.open(account, protocol)

    # -- POST /token ------------------------------------------------------------------------------

    def check_token_request(self, address: str, api_key: str) -> None:
        """``POST /token``: limited per client address and per API key (even when billing is off), against grinding."""
        self._token_requests.check(address, api_key)

    # -- accounts, reporting and administration ---------------------------------------------------

    def invalidate(self, user_id: str) -> None:
        """The user's plan, overrides or balance changed here: use the new values at once."""
        self._accounts.invalidate(user_id)

    async def changed(self, user_id: str) -> None:
        """An admin changed the user's plan, limits or balance: apply it here and tell the other replicas."""
        self.invalidate(user_id)
        if self.share is not None:
            await self.share.announce_change(user_id)

    async def limits(self, user_id: str) -> Plan:
        return (await self._accounts.load(user_id)).limits

    async def top_up(self, user_id: str, amount: int) -> LedgerState:
        await self._users.get_user(user_id)
        assert self._ledger is not None
        state = await self._ledger.top_up(user_id, self.period().id, amount)
        await self.changed(user_id)
        account = self._accounts.get(user_id)
        if account is not None:
            account.state = state
        return state

    async def usage(self, user_id: str, app: str | None = None) -> dict[str, Any]:
        """What ``GET /api/v1/usage`` answers (``app``: the token's app, whose counts are ``app_usage``)."""
        return await self._report.usage(user_id, app)

    async def usage_history(self, user_id: str) -> dict[str, Any]:
        """What ``GET /api/v1/usage/history`` answers: units per hour (last 48 h) and per day (this period)."""
        return await self._report.usage_history(user_id)

    # -- clocks and errors ------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def period(self) -> Period:
        """The current billing period (recomputed only when the wall clock leaves it)."""
        return self._clock.period()

    def rate_limited(self, key: str, rate: float, burst: float, what: str, limit: str) -> RateLimited:
        """429 naming the ``limit`` (rate, api_key_rate, token_rate), with ``RateLimit-*`` headers and ``retry_after``."""
        return rate_limited(self.limiter, key, rate, burst, what, limit)

    # -- what RateShare calls (through ``peers``) ----------------------------------------------------

    def apply_remote(self, replica: str, spent: dict[str, int], connections: dict[str, int] | None) -> None:
        """Another replica spent ``spent`` rate tokens per user and holds ``connections`` (``None``: unchanged)."""
        self.peers.apply_remote(replica, spent, connections)

    def local_connections(self) -> dict[str, int]:
        return self.peers.local_connections()
