"""The KV ledger and usage meter on a real nats-server: reservations never exceed quota + balance."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from gateway.billing.ledger import BILLING_BUCKET, Ledger
from gateway.billing.meter import UsageMeter
from gateway.billing.plans import Operation, Prices
from gateway.bus import Bucket, Bus
from gateway.settings import Settings
from tests.harness import NatsServer, temp_dir


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(Settings.from_env({}, data_dir=temp_dir("fg-ledger-")))
    await bus.connect([nats_server.url])
    yield bus
    await bus.close()


def user() -> str:
    return "u" + secrets.token_hex(5)


async def test_reserve_takes_the_quota_then_the_credits(bus: Bus) -> None:
    ledger, uid = Ledger(await bus.bucket(BILLING_BUCKET)), user()
    grant = await ledger.reserve(uid, "2026-11", quota=100, want=40)
    assert (grant.units, grant.credit_units, grant.state.used) == (25, 0, 25)  # a quarter of what is left
    await ledger.top_up(uid, "2026-11", 50)
    total = grant.units
    while True:
        grant = await ledger.reserve(uid, "2026-11", quota=100, want=40)
        if grant.units == 0:
            break
        total += grant.units
    assert total == 150  # exactly quota + balance
    state = await ledger.read(uid, "2026-11")
    assert (state.used, state.credits) == (150, 0)
    await ledger.release(uid, "2026-11", 10, 4)  # unused: 4 of them were paid with credits
    state = await ledger.read(uid, "2026-11")
    assert (state.used, state.credits) == (140, 4)


async def test_debt_is_paid_even_past_the_quota(bus: Bus) -> None:
    ledger, uid = Ledger(await bus.bucket(BILLING_BUCKET)), user()
    await ledger.top_up(uid, "2026-11", 5)
    grant = await ledger.reserve(uid, "2026-11", quota=10, want=0, debt=30)
    assert grant.units == 0 and (grant.state.used, grant.state.credits) == (30, 0)


async def test_a_new_period_restarts_usage_and_keeps_credits(bus: Bus) -> None:
    ledger, uid = Ledger(await bus.bucket(BILLING_BUCKET)), user()
    await ledger.top_up(uid, "2026-11", 7)
    await ledger.reserve(uid, "2026-11", quota=10, want=0, debt=15)
    assert (await ledger.read(uid, "2026-11")).credits == 2
    state = await ledger.read(uid, "2026-12")
    assert (state.period, state.used, state.credits) == ("2026-12", 0, 2)
    grant = await ledger.reserve(uid, "2026-12", quota=10, want=100)
    assert grant.state.period == "2026-12" and grant.units == 3


async def test_concurrent_replicas_never_reserve_more_than_quota_and_balance(bus: Bus) -> None:
    bucket = await bus.bucket(BILLING_BUCKET)
    replicas, uid = [Ledger(bucket) for _ in range(4)], user()
    await replicas[0].top_up(uid, "2026-11", 13)

    async def drain(ledger: Ledger) -> int:
        got = 0
        while (grant := await ledger.reserve(uid, "2026-11", quota=500, want=16)).units:
            got += grant.units
        return got

    totals = await asyncio.gather(*(drain(r) for r in replicas))
    assert sum(totals) == 513


async def test_meter_adds_up_flushes_from_replicas(bus: Bus) -> None:
    bucket = await bus.bucket(BILLING_BUCKET)
    prices = Prices(delivery=2)
    a, b, uid = UsageMeter(bucket, prices), UsageMeter(bucket, prices), user()
    for _ in range(3):
        a.count("2026-11", uid, "app", Operation.PUBLISH)
    b.count("2026-11", uid, "app", Operation.DELIVERY, 4)
    b.count("2026-11", uid, "other", Operation.QUEUE_SEND)
    assert a.pending("2026-11", uid) == {"app": {"publish": 3, "queue_send": 0, "delivery": 0, "units": 3}}
    await asyncio.gather(a.flush(), b.flush())
    assert a.pending("2026-11", uid) == {}
    stored = await a.stored("2026-11", uid)
    assert stored["app"] == {"publish": 3, "queue_send": 0, "delivery": 4, "units": 11}
    assert stored["other"]["units"] == 1


class ListingAnsweredLate:
    """A bucket whose key listings answer only after a flush's write has landed, or after half a second.

    That is what a loaded nats-server may do: the listing computed before the
    write, its answer read after it.
    """

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket
        self.written = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bucket, name)

    async def change_json(self, *args: Any, **kwargs: Any) -> Any:
        changed = await self._bucket.change_json(*args, **kwargs)
        self.written.set()
        return changed

    async def keys(self, pattern: str = ">") -> list[str]:
        names = await self._bucket.keys(pattern)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.written.wait(), 0.5)
        return names


async def test_usage_read_while_a_flush_writes_misses_nothing(bus: Bus) -> None:
    bucket = ListingAnsweredLate(await bus.bucket(BILLING_BUCKET))
    meter, uid = UsageMeter(cast(Bucket, bucket), Prices()), user()
    for _ in range(3):
        meter.count("2026-11", uid, "app", Operation.PUBLISH)
    usage, written = await asyncio.gather(meter.usage("2026-11", uid), meter.flush())
    assert written == 1 and usage["app"]["publish"] == 3
    assert (await meter.usage("2026-11", uid))["app"]["publish"] == 3
