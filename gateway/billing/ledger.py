"""The per-user ledger in JetStream KV: units reserved this period and the prepaid balance.

Key ``ledger.<user_id>`` in bucket ``fg_billing`` holds ``{"period", "used",
"credits"}``. ``used`` counts the units handed out this period (to any
replica); the first ``quota`` of them are included in the plan, each one beyond
draws a credit. Replicas never spend a unit they have not reserved here with
compare-and-set, so together they never hand out more than quota + balance:
the bound on publishes is exact. A unit reserved but not used is given back
(``release``) when a replica goes idle or stops. Deliveries cannot be refused
once the message was accepted; they are charged afterwards as ``debt`` and may
take ``used`` past the quota (see ``BillingGuard``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from gateway.bus import Bucket
from gateway.errors import Conflict

BILLING_BUCKET = "fg_billing"
_CAS_ATTEMPTS = 50
FAIRNESS = 4  # a reservation takes at most a quarter of what is left, so replicas share the end of a quota


@dataclass(slots=True)
class LedgerState:
    period: str
    used: int = 0
    credits: int = 0

    def available(self, quota: int) -> int:
        return max(0, quota - self.used) + self.credits


@dataclass(frozen=True, slots=True)
class Grant:
    units: int  # newly reserved units, beyond the debt paid
    credit_units: int  # how many of ``units`` were paid with credits
    state: LedgerState  # the ledger after the reservation


class Ledger:
    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    @staticmethod
    def _key(user_id: str) -> str:
        return f"ledger.{user_id}"

    async def read(self, user_id: str, period: str) -> LedgerState:
        entry = await self._bucket.get(self._key(user_id))
        state = LedgerState(period) if entry is None else LedgerState(**orjson.loads(entry.value))
        if state.period != period:
            state = LedgerState(period, 0, state.credits)
        return state

    async def _change(self, user_id: str, period: str, apply: Callable[[LedgerState], None]) -> LedgerState:
        """Read, ``apply`` and write back with compare-and-set, retrying when another replica wrote first."""
        key = self._key(user_id)
        for _ in range(_CAS_ATTEMPTS):
            entry = await self._bucket.get(key)
            state = LedgerState(period) if entry is None else LedgerState(**orjson.loads(entry.value))
            if state.period != period and period:
                state = LedgerState(period, 0, state.credits)  # a new period: usage starts again, credits stay
            apply(state)
            value = orjson.dumps(asdict(state))
            try:
                if entry is None:
                    await self._bucket.create(key, value)
                else:
                    await self._bucket.update(key, value, entry.revision)
            except Conflict:
                continue
            return state
        raise Conflict(f"billing ledger of {user_id!r} is too busy; retry")

    async def reserve(self, user_id: str, period: str, quota: int, want: int, debt: int = 0) -> Grant:
        """Pay ``debt`` (forced, may exceed what is left) and reserve up to ``want`` more units."""
        granted = [0, 0]

        def apply(state: LedgerState) -> None:
            left_in_quota = max(0, quota - state.used)
            from_quota = min(debt, left_in_quota)
            state.credits -= min(debt - from_quota, state.credits)
            state.used += debt
            left_in_quota -= from_quota
            available = left_in_quota + state.credits
            units = min(want, max(1, available // FAIRNESS), available) if want > 0 else 0
            credit_units = units - min(units, left_in_quota)
            state.used += units
            state.credits -= credit_units
            granted[:] = [units, credit_units]

        state = await self._change(user_id, period, apply)
        return Grant(granted[0], granted[1], state)

    async def release(self, user_id: str, period: str, units: int, credit_units: int) -> None:
        """Give back ``units`` reserved in ``period`` and not used; ``credit_units`` of them return as credits."""

        def apply(state: LedgerState) -> None:
            if state.period == period:
                state.used = max(0, state.used - units)
            state.credits += credit_units

        await self._change(user_id, "", apply)

    async def top_up(self, user_id: str, period: str, amount: int) -> LedgerState:
        def apply(state: LedgerState) -> None:
            state.credits += amount

        return await self._change(user_id, period, apply)
