"""Usage history in a real JetStream KV bucket: hours and days in UTC, replicas adding up, unflushed counts shown."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from gateway.billing.history import UsageHistory
from gateway.bus import Bucket, Bus
from gateway.settings import Settings
from tests.harness import NatsServer


class Clock:
    def __init__(self, moment: str) -> None:
        self.now = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()

    def set(self, moment: str) -> None:
        self.now = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def bucket(nats_server: NatsServer) -> AsyncIterator[Bucket]:
    bus = Bus(Settings.from_env({}))
    await bus.connect([nats_server.url])
    try:
        yield await bus.bucket("fg_test_history_" + secrets.token_hex(4))
    finally:
        await bus.close()


async def test_hours_and_days_in_utc_across_midnight(bucket: Bucket) -> None:
    clock = Clock("2026-12-01T23:30:00")
    history = UsageHistory(bucket, clock)
    history.add("alice", 5)
    history.add("bob", 100)
    await history.flush()
    clock.set("2026-12-02T00:10:00")
    history.add("alice", 7)
    history.add("alice", 0)
    await history.flush()
    history.add("alice", 2)  # not flushed yet: shown all the same
    clock.set("2026-12-02T00:30:00")
    view = await history.read("alice")
    assert len(view["hourly"]) == 48
    assert view["hourly"][-1] == {"start": "2026-12-02T00:00:00Z", "units": 9}
    assert view["hourly"][-2] == {"start": "2026-12-01T23:00:00Z", "units": 5}
    assert view["hourly"][0]["start"] == "2026-11-30T01:00:00Z"
    assert sum(h["units"] for h in view["hourly"]) == 14
    assert view["daily"] == [{"date": "2026-12-01", "units": 5}, {"date": "2026-12-02", "units": 9}]
    assert view["period"] == {"id": "2026-12", "start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    clock.set("2027-01-01T00:30:00")  # a new period: the last 48 hours reach back into the old one
    await history.flush()
    view = await history.read("alice")
    assert view["daily"] == [{"date": "2027-01-01", "units": 0}]
    assert sum(h["units"] for h in view["hourly"]) == 0  # 2026-12-02 is more than 48 hours ago
    assert (await history.read("bob"))["hourly"][0]["units"] == 0


async def test_replicas_flushing_together_add_up_exactly(bucket: Bucket) -> None:
    clock = Clock("2026-12-05T10:15:00")
    replicas = [UsageHistory(bucket, clock) for _ in range(2)]

    async def work(history: UsageHistory) -> None:
        for _ in range(15):
            history.add("carol", 3)
            await history.flush()

    await asyncio.gather(*(work(r) for r in replicas))  # compare-and-set on the same day record
    view = await replicas[0].read("carol")
    assert view["hourly"][-1] == {"start": "2026-12-05T10:00:00Z", "units": 90}
    assert view["daily"][-1] == {"date": "2026-12-05", "units": 90}
    assert sum(d["units"] for d in view["daily"]) == 90


async def test_a_read_while_a_flush_writes_misses_nothing(bucket: Bucket) -> None:
    clock = Clock("2026-12-05T10:15:00")
    history = UsageHistory(bucket, clock)
    for units in range(1, 11):
        history.add("dave", units)
        _, view = await asyncio.gather(history.flush(), history.read("dave"))  # the flush starts first
        assert view["hourly"][-1]["units"] == units * (units + 1) // 2
