"""NATS goes away and comes back: publishes fail fast with 503, recover, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.harness import Gateway, NatsServer
from tests.sse_client import collect


async def test_nats_outage_is_503_fast_then_recovers_without_losing_acknowledged(
    make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]
) -> None:
    nats = make_nats()
    gw = make_gateway(nats.url)
    _, token = gw.user_token()
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: dict[int, int] = {}  # message number -> seq
    statuses: list[tuple[int, float]] = []  # (status, seconds taken)
    counter = iter(range(10**9))
    stop = asyncio.Event()
    answered = asyncio.Condition()

    async def until(predicate: Callable[[], bool]) -> None:
        async with answered:
            await answered.wait_for(predicate)

    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:

        async def publisher() -> None:
            while not stop.is_set():
                n = next(counter)
                started = time.monotonic()
                r = await client.post(
                    "/api/v1/publish", headers=headers | {"Idempotency-Key": f"m{n}"}, json={"topic": "t", "message": n}
                )
                statuses.append((r.status_code, time.monotonic() - started))
                if r.status_code == 200:
                    acknowledged[n] = r.json()["seq"]
                async with answered:
                    answered.notify_all()
                if r.status_code != 200:
                    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
                    await asyncio.sleep(0.02)  # the behaviour simulated: a client's back-off before retrying

        tasks = [asyncio.create_task(publisher()) for _ in range(4)]
        await until(lambda: len(acknowledged) >= 200)

        nats.stop()
        stopped_at = time.monotonic()
        await until(lambda: any(s == 503 for s, _ in statuses[-4:]))
        assert time.monotonic() - stopped_at < 1.0, "503 not within a second of NATS stopping"
        assert (await client.get("/readyz")).status_code == 503
        outage_count = len(statuses)
        async with asyncio.timeout(10):  # keep publishing into the outage: 100 more answers (a hung one never comes)
            await until(lambda: len(statuses) >= outage_count + 100)
        assert all(s == 503 and took < 1.0 for s, took in statuses[outage_count:]), "requests hung or failed otherwise"

        nats.start()
        acked_before_recovery = len(acknowledged)
        async with asyncio.timeout(20):
            await until(lambda: len(acknowledged) >= acked_before_recovery + 200)
        stop.set()
        await asyncio.gather(*tasks)
        assert (await client.get("/readyz")).status_code == 200
        assert {s for s, _ in statuses} <= {200, 503}

        # every acknowledged message is in the stream, with its number, exactly once
        # (the stream may also hold a few messages that were stored but answered 503: their clients retry)
        by_seq: dict[int, int] = {}
        async with client.stream(
            "GET", "/api/v1/subscribe", params={"topic": "t", "token": token, "last_event_id": "0"}
        ) as s:
            while max(by_seq, default=0) < max(acknowledged.values()):
                event = (await collect(s, 1, timeout=30))[0]
                by_seq[int(event.id or 0)] = event.json()["data"]
    for n, seq in acknowledged.items():
        assert by_seq.get(seq) == n
