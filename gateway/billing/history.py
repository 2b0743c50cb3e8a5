"""Usage over time: units per user per hour, in JetStream KV, for the dashboard's chart.

The meter hands over what it has just flushed (``add``, in memory); ``flush``
then adds it to ``history.<user_id>.<YYYY-MM-DD>`` in bucket ``fg_billing``, a
JSON list of 24 hourly unit counts, with compare-and-set, so replicas' counts
add up. Nothing happens per message: the hour is the flush's, at most one
sync interval after the message. Counts not written (NATS unreachable) stay for
the next flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.billing.meter import Period, iso
from gateway.bus import Bucket

HOURS_SHOWN = 48


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


class UsageHistory:
    def __init__(self, bucket: Bucket, wall: Callable[[], float]) -> None:
        self._bucket = bucket
        self._wall = wall
        self._pending: dict[tuple[str, str, int], int] = {}  # (user, day, hour) -> units
        self._writing = asyncio.Lock()  # held by ``flush`` while units move from pending to stored

    @staticmethod
    def _key(user_id: str, day: str) -> str:
        return f"history.{user_id}.{day}"

    def add(self, user_id: str, units: int) -> None:
        """Count ``units`` for ``user_id`` in the current hour (kept in memory until ``flush``)."""
        if units == 0:
            return
        moment = datetime.fromtimestamp(self._wall(), UTC)
        key = (user_id, _day(moment), moment.hour)
        self._pending[key] = self._pending.get(key, 0) + units

    async def flush(self) -> None:
        """Write what was added; what could not be written stays for the next flush."""
        async with self._writing:
            pending, self._pending = self._pending, {}
            by_day: dict[tuple[str, str], dict[int, int]] = {}
            for (user_id, day, hour), units in pending.items():
                by_day.setdefault((user_id, day), {})[hour] = units
            try:
                for (user_id, day), hours in list(by_day.items()):
                    await self._add(self._key(user_id, day), hours)
                    del by_day[(user_id, day)]
            finally:
                for (user_id, day), hours in by_day.items():
                    for hour, units in hours.items():
                        key = (user_id, day, hour)
                        self._pending[key] = self._pending.get(key, 0) + units

    async def _add(self, name: str, hours: dict[int, int]) -> None:
        def add(stored: list[int] | None) -> list[int]:
            counts = [0] * 24 if stored is None else stored
            for hour, units in hours.items():
                counts[hour] += units
            return counts

        await self._bucket.change_json(name, add)

    async def _days(self, user_id: str, days: list[str]) -> dict[str, list[int]]:
        """Stored plus pending units, read while no flush moves units from one to the other."""
        async with self._writing:
            entries = await asyncio.gather(*(self._bucket.get(self._key(user_id, day)) for day in days))
            out = {
                day: [0] * 24 if e is None else list(orjson.loads(e.value))
                for day, e in zip(days, entries, strict=True)
            }
            for (user, day, hour), units in self._pending.items():
                if user == user_id and day in out:
                    out[day][hour] += units
        return out

    async def read(self, user_id: str) -> dict[str, Any]:
        """Units per hour for the last 48 hours and per day for the current billing period (oldest first)."""
        now = datetime.fromtimestamp(self._wall(), UTC)
        this_hour = now.replace(minute=0, second=0, microsecond=0)
        hours = [this_hour - timedelta(hours=n) for n in range(HOURS_SHOWN - 1, -1, -1)]
        period = Period.at(now.timestamp())
        period_days = [period.start + timedelta(days=n) for n in range((now - period.start).days + 1)]
        names = sorted({_day(h) for h in hours} | {_day(d) for d in period_days})
        days = await self._days(user_id, names)
        return {
            "user_id": user_id,
            "period": {"id": period.id, "start": iso(period.start), "end": iso(period.end)},
            "hourly": [{"start": iso(h), "units": days[_day(h)][h.hour]} for h in hours],
            "daily": [{"date": _day(d), "units": sum(days[_day(d)])} for d in period_days],
        }
