"""The billing guard in-process, on a real KV ledger, with injected clocks: periods, debts, refunds, rate limits."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import orjson
import pytest

from auth.accounts import User
from auth.permissions import Permissions
from auth.tokens import Claims
from gateway.billing import BillingGuard, Catalog
from gateway.billing.ledger import BILLING_BUCKET, Ledger
from gateway.billing.meter import UsageMeter
from gateway.bus import Bus
from gateway.errors import PayloadTooLarge, PaymentRequired, RateLimited
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.topics import Namespace
from tests.harness import NatsServer, temp_dir


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Users:
    """Accounts' ``get_user`` for the guard: every user is on ``plan``."""

    def __init__(self, plan: str) -> None:
        self.plan = plan

    async def get_user(self, user_id: str) -> User:
        return User(user_id=user_id, plan=self.plan)


PLAN = {"quota": 5, "rate": 1, "burst": 3, "max_connections": 1, "max_message_bytes": 100}


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(Settings.from_env({}, data_dir=temp_dir("fg-guard-")))
    await bus.connect([nats_server.url])
    yield bus
    await bus.close()


async def make_guard(bus: Bus, clock: Clock, wall: Clock, plan: Mapping[str, float]) -> BillingGuard:
    path = temp_dir("fg-guard-plans-") / "plans.json"
    path.write_bytes(orjson.dumps({"plans": {"p": plan}}))
    settings = Settings.from_env({}, plans_file=path)
    catalog = Catalog.load(path, server_max_bytes=1 << 20)
    bucket = await bus.bucket(BILLING_BUCKET)
    return BillingGuard(
        settings,
        catalog,
        Users("p"),
        Ledger(bucket),
        UsageMeter(bucket, catalog.prices),
        Metrics(),
        clock=clock,
        wall=wall,
    )


def claims() -> Claims:
    return Claims(Namespace("u" + secrets.token_hex(5), "app"), 0, 2**40, "jti", Permissions())


async def test_a_new_period_restores_service_at_once(bus: Bus) -> None:
    clock, wall = Clock(100.0), Clock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp())
    guard = await make_guard(bus, clock, wall, {**PLAN, "burst": 100, "rate": 100})
    who = claims()
    for _ in range(5):
        await guard.admit(who, 10, protocol="test")
    with pytest.raises(PaymentRequired) as refused:
        await guard.admit(who, 10, protocol="test")
    assert refused.value.details["resets_at"] == "2026-12-01T00:00:00Z"
    assert refused.value.details["period"] == "2026-11"
    wall.now = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    await guard.admit(who, 10, protocol="test")  # no waiting for a sync: the month changed
    usage = await guard.usage(who.user_id, who.app)
    assert usage["period"]["id"] == "2026-12" and usage["used"] == 1


async def test_rate_limit_on_the_injected_clock(bus: Bus) -> None:
    clock, wall = Clock(100.0), Clock(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    guard = await make_guard(bus, clock, wall, {**PLAN, "quota": 1000})
    who = claims()
    for _ in range(3):
        await guard.admit(who, 10, protocol="test")
    with pytest.raises(RateLimited) as refused:
        await guard.admit(who, 10, protocol="test")
    assert refused.value.details["retry_after"] == pytest.approx(1.0)
    assert refused.value.headers["RateLimit-Remaining"] == "0" and refused.value.headers["RateLimit-Reset"] == "3"
    clock.now += 1.0
    await guard.admit(who, 10, protocol="test")
    with pytest.raises(RateLimited):
        await guard.admit(who, 10, protocol="test")


async def test_refunds_deliveries_and_size(bus: Bus) -> None:
    clock, wall = Clock(100.0), Clock(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    guard = await make_guard(bus, clock, wall, {**PLAN, "burst": 100, "rate": 100})
    who = claims()
    for _ in range(5):
        await guard.admit(who, 10, protocol="test")
        guard.refund(who)  # not stored after all: not billed
    await guard.admit(who, 10, protocol="test")
    guard.record_delivery(who.namespace, 4)  # 1 publish + 4 deliveries = the whole quota of 5
    with pytest.raises(PaymentRequired):
        await guard.admit(who, 10, protocol="test")
    assert guard.exhausted(who.user_id)
    with pytest.raises(PaymentRequired):
        await guard.connect(who, "test")
    usage = await guard.usage(who.user_id, who.app)
    assert usage["app_usage"] == {"publish": 1, "queue_send": 0, "delivery": 4, "units": 5}
    other = claims()
    with pytest.raises(PayloadTooLarge, match="allows 100"):
        await guard.admit(other, 101, protocol="test")


async def test_connections_are_counted_and_released(bus: Bus) -> None:
    clock, wall = Clock(100.0), Clock(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    guard = await make_guard(bus, clock, wall, PLAN)
    who = claims()
    lease = await guard.connect(who, "test")
    with pytest.raises(PaymentRequired) as refused:
        await guard.connect(who, "test")
    assert refused.value.details["limit"] == "max_connections"
    lease.close()
    lease.close()  # idempotent
    (await guard.connect(who, "test")).close()


async def test_credits_extend_the_quota_and_then_the_balance_is_the_limit(bus: Bus) -> None:
    clock, wall = Clock(100.0), Clock(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    guard = await make_guard(bus, clock, wall, {**PLAN, "burst": 100, "rate": 100})
    who = claims()
    await guard.top_up(who.user_id, 2)
    for _ in range(7):
        await guard.admit(who, 10, protocol="test")
    with pytest.raises(PaymentRequired) as refused:
        await guard.admit(who, 10, protocol="test")
    details = refused.value.details
    assert (details["limit"], details["used"], details["quota"], details["balance"]) == ("balance", 7, 5, 0)
