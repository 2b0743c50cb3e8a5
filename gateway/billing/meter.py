"""Usage per user and app per billing period: counted in memory, flushed to KV.

The hot path only bumps an in-memory counter. ``flush`` adds each replica's
counts to ``usage.<period>.<user_id>.<app>`` in bucket ``fg_billing`` with
compare-and-set, so replicas' counts add up; counts that could not be written
(NATS unreachable) stay and go with the next flush. Billing periods are
calendar months in UTC.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.billing.plans import Operation, Prices
from gateway.bus import Bucket

_CAS_ATTEMPTS = 50
FIELDS = tuple(op.value for op in Operation)
_INDEX = {op: FIELDS.index(op.value) for op in Operation}


@dataclass(frozen=True, slots=True)
class Period:
    id: str  # "2026-11"
    start: datetime
    end: datetime  # when the next period starts (the quota resets)

    @classmethod
    def at(cls, timestamp: float) -> Period:
        moment = datetime.fromtimestamp(timestamp, UTC)
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        return cls(f"{moment.year:04d}-{moment.month:02d}", start, end)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def empty_usage() -> dict[str, int]:
    return {**dict.fromkeys(FIELDS, 0), "units": 0}


class History(Protocol):
    """Where each flush's counts also go, by user and hour (``gateway.billing.history.UsageHistory``)."""

    def add(self, user_id: str, units: int) -> None: ...

    async def flush(self) -> None: ...

    async def read(self, user_id: str) -> dict[str, Any]: ...


class UsageMeter:
    def __init__(self, bucket: Bucket, prices: Prices, history: History | None = None) -> None:
        self._bucket = bucket
        self._prices = prices
        self.history = history  # units per hour, added from what each flush wrote
        self._pending: dict[tuple[str, str, str], list[int]] = {}  # (period, user, app) -> counts by FIELDS
        self._writing = asyncio.Lock()  # held by ``flush`` while counts move from pending to stored

    def count(self, period: str, user_id: str, app: str, operation: Operation, n: int = 1) -> None:
        key = (period, user_id, app)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = [0] * len(FIELDS)
        counts[_INDEX[operation]] += n

    def pending(self, period: str, user_id: str, app: str | None = None) -> dict[str, dict[str, int]]:
        """Counts not flushed yet, by app (not those a running flush is writing: ``usage`` waits for it)."""
        out: dict[str, list[int]] = {}
        for (p, u, a), counts in self._pending.items():
            if p == period and u == user_id and (app is None or a == app):
                total = out.setdefault(a, [0] * len(FIELDS))
                for i, n in enumerate(counts):
                    total[i] += n
        return {a: self._as_usage(counts) for a, counts in out.items()}

    def _as_usage(self, counts: list[int]) -> dict[str, int]:
        usage = dict(zip(FIELDS, counts, strict=True))
        usage["units"] = sum(n * self._prices.of(Operation(f)) for f, n in usage.items())
        return usage

    async def flush(self) -> int:
        """Write the pending counts; the number of records written. Failed ones stay pending."""
        async with self._writing:
            pending, self._pending = self._pending, {}
            written = 0
            try:
                for key, counts in list(pending.items()):
                    usage = self._as_usage(counts)
                    await self._add(key, usage)
                    del pending[key]
                    written += 1
                    if self.history is not None:
                        self.history.add(key[1], usage["units"])
            finally:
                for key, counts in pending.items():  # not written: go with the next flush
                    self._merge_back(key, counts)
        if self.history is not None:
            await self.history.flush()
        return written

    def _merge_back(self, key: tuple[str, str, str], counts: list[int]) -> None:
        current = self._pending.setdefault(key, [0] * len(FIELDS))
        for i, n in enumerate(counts):
            current[i] += n

    async def _add(self, key: tuple[str, str, str], usage: dict[str, int]) -> None:
        def add(stored: dict[str, int] | None) -> dict[str, int]:
            total = empty_usage() if stored is None else stored
            for field, n in usage.items():
                total[field] = total.get(field, 0) + n
            return total

        await self._bucket.change_json("usage.{}.{}.{}".format(*key), add, attempts=_CAS_ATTEMPTS)

    async def usage(self, period: str, user_id: str) -> dict[str, dict[str, int]]:
        """Stored plus pending counts of ``user_id`` in ``period``, by app.

        Read while no flush runs: a flush finishing between the two reads would
        move counts out of pending after stored was read, and they would be missed.
        """
        async with self._writing:
            by_app = await self.stored(period, user_id)
            for app, counts in self.pending(period, user_id).items():
                total = by_app.setdefault(app, empty_usage())
                for name, n in counts.items():
                    total[name] = total.get(name, 0) + n
        return by_app

    async def stored(self, period: str, user_id: str) -> dict[str, dict[str, int]]:
        """The flushed usage of ``user_id`` in ``period``, by app."""
        out = {}
        for name in await self._bucket.keys(f"usage.{period}.{user_id}.*"):
            entry = await self._bucket.get(name)
            if entry is not None:
                out[name.rsplit(".", 1)[1]] = {**empty_usage(), **orjson.loads(entry.value)}
        return out
