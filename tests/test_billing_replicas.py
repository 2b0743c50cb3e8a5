"""Two gateway processes on one NATS enforce one quota and (approximately) one rate limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.billing_env import PLANS, SYNC_INTERVAL, billing_env
from tests.harness import Gateway, NatsServer, shared_keys, temp_dir
from tests.sse_client import collect


def two_replicas(nats_server: NatsServer, make_gateway: Callable[..., Gateway]) -> tuple[Gateway, Gateway]:
    env = billing_env(temp_dir("fg-billing-replicas-"))
    shared = shared_keys()
    return make_gateway(nats_server.url, env=env, **shared), make_gateway(nats_server.url, env=env, **shared)


async def hammer(
    gw: Gateway, token: str, *, attempts: int | None = None, until: float | None = None, workers: int = 8
) -> dict[int, int]:
    """Publish from ``workers`` concurrent clients; the count of each status code."""
    codes: dict[int, int] = {}
    budget = [attempts if attempts is not None else 10**9]
    async with httpx.AsyncClient(
        base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:

        async def worker() -> None:
            while budget[0] > 0 and (until is None or time.monotonic() < until):
                budget[0] -= 1
                answer = await http.post("/api/v1/publish", json={"topic": "load", "message": "x"})
                codes[answer.status_code] = codes.get(answer.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return codes


async def test_two_replicas_hammered_together_accept_exactly_the_quota(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    a, b = two_replicas(nats_server, make_gateway)
    user_id, key = a.new_user(plan="thousand")
    token = a.token(key)
    first, second = await asyncio.gather(hammer(a, token, attempts=900), hammer(b, token, attempts=900))
    assert set(first) | set(second) <= {200, 402}
    accepted = first.get(200, 0) + second.get(200, 0)
    # The documented bound for publishes is zero: every accepted message spent a unit reserved with CAS.
    assert accepted <= PLANS["thousand"]["quota"]
    assert first.get(402, 0) > 0 and second.get(402, 0) > 0
    # Units one replica reserved but did not use go back to the ledger once it is idle: none are lost.
    deadline = time.monotonic() + 20
    while accepted < 1000 and time.monotonic() < deadline:
        more = await hammer(a, token, attempts=50, workers=1)
        accepted += more.get(200, 0)
        if more.get(200, 0) == 0:
            await asyncio.sleep(SYNC_INTERVAL)  # the other replica gives units back at its sync: polled, deadline above
    assert accepted == 1000
    # What was accepted is exactly what was stored.
    assert a.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 5000}).status_code == 200
    async with httpx.AsyncClient(base_url=b.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        params = {"topic": "load", "last_event_id": "0"}
        async with http.stream("GET", "/api/v1/subscribe", params=params) as stream:
            # the top-up on replica a is announced to b at once (at the latest, b asks the ledger after a sync)
            for _ in range(20):
                if stream.status_code != 402:
                    break
                await stream.aclose()
                await asyncio.sleep(SYNC_INTERVAL / 2)  # retried like a client until b has heard of the top-up
                stream = await http.send(http.build_request("GET", "/api/v1/subscribe", params=params), stream=True)
            assert stream.status_code == 200
            assert len(await collect(stream, 1000, timeout=60)) == 1000
            await stream.aclose()
        sentinel = await http.post("/api/v1/publish", json={"topic": "load", "message": "end"})
        assert sentinel.status_code == 200
        assert sentinel.json()["seq"] > 0
        usage = (await http.get("/api/v1/usage")).json()
    assert usage["app_usage"]["publish"] >= 1000  # counts from both replicas (the other's after its flush)


async def test_the_rate_limit_is_shared_between_replicas(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    a, b = two_replicas(nats_server, make_gateway)
    _, key = a.new_user(plan="twenty-per-second")
    token = a.token(key)
    plan = PLANS["twenty-per-second"]
    rate, burst = plan["rate"], plan["burst"]
    start = time.monotonic()
    until = start + 3.0
    first, second = await asyncio.gather(
        hammer(a, token, until=until, workers=4), hammer(b, token, until=until, workers=4)
    )
    elapsed = time.monotonic() - start
    accepted = first.get(200, 0) + second.get(200, 0)
    assert set(first) | set(second) <= {200, 429}
    assert first.get(429, 0) > 0 and second.get(429, 0) > 0
    # Documented bound for N replicas over a window T: rate*T + N*burst + N*rate*sync_interval.
    # Two independent limiters would accept about 2*(burst + rate*T) = 160 here.
    bound = rate * elapsed + 2 * burst + 2 * rate * SYNC_INTERVAL
    assert accepted <= bound, (accepted, bound, first, second)
    assert accepted >= burst + rate * elapsed * 0.5  # and it is a limit, not a wall


async def test_max_connections_counts_connections_on_every_replica(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    a, b = two_replicas(nats_server, make_gateway)
    _, key = a.new_user(plan="tiny")  # two connections
    token = a.token(key)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=a.base_url, headers=headers, timeout=10) as on_a,
        httpx.AsyncClient(base_url=b.base_url, headers=headers, timeout=10) as on_b,
    ):
        async with (
            on_a.stream("GET", "/api/v1/subscribe", params={"topic": "x"}) as first,
            on_b.stream("GET", "/api/v1/subscribe", params={"topic": "x"}) as second,
        ):
            assert first.status_code == second.status_code == 200
            # each replica learns the other's connections within one sync interval
            deadline = time.monotonic() + 10
            refused = None
            while time.monotonic() < deadline:
                third = await on_a.send(
                    on_a.build_request("GET", "/api/v1/subscribe", params={"topic": "y"}), stream=True
                )
                await third.aclose()
                if third.status_code == 402:
                    refused = third
                    break
                await asyncio.sleep(SYNC_INTERVAL)  # counts travel at each sync: polled, deadline above
            assert refused is not None  # 1 here + 1 on b = the plan's 2
