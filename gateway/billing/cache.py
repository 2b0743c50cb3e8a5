"""Billing accounts in memory: one per user this replica has seen, with the plan's limits.

An ``Account`` holds what every other billing concern keeps per user (reserved
units, connections, the last ledger state); ``AccountCache`` loads it on first
use (concurrent first uses share one read), re-reads the user's plan in the
background once it is older than ``LIMITS_REFRESH`` sync intervals, and forgets
an account nobody used for ``FORGET_AFTER`` seconds. A change made by an admin
call (``invalidate``) gives the reserved units back and makes the next message
wait for the new limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.billing.ledger import LedgerState
from gateway.billing.plans import Catalog, Plan
from gateway.errors import FlowGateError, NotFound, Unauthorized

log = logging.getLogger("flowgate.billing")

MIN_CHUNK = 16  # the first reservation's size (``Reservations`` doubles or halves it with use)
LIMITS_REFRESH = 4  # sync intervals between re-reads of a user's plan
FORGET_AFTER = 120.0  # seconds without use after which an account without connections is dropped from memory


@dataclass(eq=False, slots=True)
class Account:
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


class PlanHolder(Protocol):
    """What billing reads of a user record (``auth.accounts.User``)."""

    @property
    def plan(self) -> str: ...

    @property
    def extra(self) -> dict[str, Any]: ...


class Users(Protocol):
    """Where a user's plan comes from (``auth.accounts.Accounts``)."""

    async def get_user(self, user_id: str) -> PlanHolder: ...


def background(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task whose failure is retrieved (logged where it happens; an awaiting caller re-raises it)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class AccountCache:
    def __init__(
        self,
        users: Users,
        catalog: Catalog,
        clock: Callable[[], float],
        refresh: float,
        give_back: Callable[[Account], None],
    ) -> None:
        """``refresh``: seconds after which limits are re-read; ``give_back``: return an account's reserved units."""
        self._users = users
        self._catalog = catalog
        self._clock = clock
        self._refresh = refresh
        self._give_back = give_back
        self._accounts: dict[str, Account] = {}
        self._loading: dict[str, asyncio.Future[Account]] = {}

    def get(self, user_id: str) -> Account | None:
        """The account if loaded (no I/O, however old its limits)."""
        return self._accounts.get(user_id)

    def fresh(self, user_id: str, now: float) -> Account | None:
        """The hot path: the account if loaded with limits recent enough to judge by, else None."""
        account = self._accounts.get(user_id)
        if account is None or account.changed or now - account.loaded_at > self._refresh:
            return None
        return account

    def all(self) -> list[Account]:
        return list(self._accounts.values())

    def forget(self, account: Account) -> None:
        self._accounts.pop(account.user_id, None)

    async def load(self, user_id: str) -> Account:
        """The user's account, read once however many callers ask at the same time."""
        account = self._accounts.get(user_id)
        if account is not None:
            return account
        pending = self._loading.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Account] = asyncio.get_running_loop().create_future()
        self._loading[user_id] = future
        try:
            limits = await self._read_limits(user_id)
            account = self._accounts.setdefault(user_id, Account(user_id, limits, self._clock()))
            future.set_result(account)
            return account
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._loading[user_id]

    async def current(self, user_id: str) -> Account:
        """The user's account, with limits no older than ``LIMITS_REFRESH`` intervals (re-read in the background)."""
        account = self._accounts.get(user_id)
        if account is None:
            account = await self.load(user_id)
        if account.changed and account.reload is not None:
            await asyncio.shield(account.reload)
        elif account.reload is None and self._clock() - account.loaded_at > self._refresh:
            self._start_reload(account)
        return account

    def invalidate(self, user_id: str) -> None:
        """The user's plan, overrides or balance changed: use the new values at once."""
        account = self._accounts.get(user_id)
        if account is not None:
            account.blocked_until = 0.0
            account.changed = True
            self._give_back(account)
            self._start_reload(account)

    async def _read_limits(self, user_id: str) -> Plan:
        try:
            user = await self._users.get_user(user_id)
        except NotFound:
            raise Unauthorized("the token's user no longer exists") from None
        return self._catalog.limits_for(user.plan, user.extra)

    def _start_reload(self, account: Account) -> None:
        async def reload() -> None:
            try:
                limits = await self._read_limits(account.user_id)
                if limits.quota < account.limits.quota:  # stop spending what was reserved under the old quota
                    self._give_back(account)
                account.limits = limits
            except FlowGateError as exc:
                log.debug("keeping the limits of %s: %s", account.user_id, exc)
            finally:
                account.loaded_at = self._clock()
                if account.reload is task:
                    account.reload = None
                    account.changed = False

        task = background(reload())
        account.reload = task
