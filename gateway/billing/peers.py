"""This replica's side of ``RateShare``: what it tells the other replicas and what it does with their news."""

from __future__ import annotations

from collections.abc import Callable

from gateway.billing.cache import AccountCache
from gateway.billing.connections import Connections
from gateway.billing.plans import Plan
from gateway.billing.rates import PublishRates


class Peers:
    """Implements ``gateway.billing.share.LocalState`` over the account cache, rates and connections."""

    def __init__(
        self,
        accounts: AccountCache,
        rates: PublishRates,
        connections: Connections,
        clock: Callable[[], float],
        interval: float,
    ) -> None:
        self._accounts = accounts
        self._rates = rates
        self._connections = connections
        self.now = clock
        self.interval = interval

    def local_connections(self) -> dict[str, int]:
        return self._connections.local()

    def apply_remote(self, replica: str, spent: dict[str, int], connections: dict[str, int] | None) -> None:
        """Another replica spent ``spent`` rate tokens per user and holds ``connections`` (``None``: unchanged)."""
        self._rates.charge_remote(spent, self._limits_of)
        if connections is not None:
            self._connections.apply_remote(replica, connections)

    def invalidate(self, user_id: str) -> None:
        self._accounts.invalidate(user_id)

    def _limits_of(self, user_id: str) -> Plan | None:
        account = self._accounts.get(user_id)
        return None if account is None else account.limits
