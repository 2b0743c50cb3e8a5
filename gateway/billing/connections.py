"""Subscriber connections counted against the plan's maximum, on this replica and the others.

``open`` counts one connection of a loaded account (``PaymentRequired`` with
limit ``max_connections`` when the plan's connections are all open here and on
the replicas heard from) and returns a ``ConnectionLease`` whose ``close``
gives it back. ``local`` is what ``RateShare`` tells the other replicas;
``apply_remote`` records what they told us.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.billing.cache import Account, AccountCache
from gateway.errors import PaymentRequired
from gateway.metrics import Metrics


class ConnectionLease:
    """One open subscriber connection counted against the plan; ``close`` is idempotent."""

    __slots__ = ("_account", "_clock", "protocol")

    def __init__(self, clock: Callable[[], float] | None, account: Account | None, protocol: str) -> None:
        self._clock = clock
        self._account = account
        self.protocol = protocol

    def close(self) -> None:
        account, self._account = self._account, None
        if account is not None and self._clock is not None:
            account.connections -= 1
            account.last_used = self._clock()


class Connections:
    def __init__(self, accounts: AccountCache, clock: Callable[[], float], metrics: Metrics) -> None:
        self._accounts = accounts
        self._clock = clock
        self._metrics = metrics

    @staticmethod
    def count(account: Account) -> int:
        """The user's open connections, here and on the other replicas."""
        return account.connections + sum(account.remote_connections.values())

    def open(self, account: Account, protocol: str) -> ConnectionLease:
        limit = account.limits.max_connections
        open_now = self.count(account)
        if open_now >= limit:
            self._metrics.rejected.labels(protocol, "max_connections").inc()
            raise PaymentRequired(
                f"the {account.limits.name} plan allows {limit} concurrent connections and {open_now} are open",
                details={"limit": "max_connections", "used": open_now, "quota": limit},
            )
        account.connections += 1
        account.last_used = self._clock()
        return ConnectionLease(self._clock, account, protocol)

    def local(self) -> dict[str, int]:
        """Connections open on this replica, per user (users with none left out)."""
        return {a.user_id: a.connections for a in self._accounts.all() if a.connections}

    def apply_remote(self, replica: str, connections: dict[str, int]) -> None:
        """``replica`` holds ``connections`` per user now (complete: users not named hold none)."""
        for account in self._accounts.all():
            count = connections.get(account.user_id, 0)
            if count:
                account.remote_connections[replica] = count
            else:
                account.remote_connections.pop(replica, None)
