"""Nothing lost, nothing kept: 10,000 messages through HTTP, a killed consumer and a gateway restart.

Producers send 10,000 distinct bodies in batches of 10 while consumers receive
in batches of 10 and batch-delete. One consumer takes a batch and dies without
deleting it; halfway through, the gateway is stopped and started again on the
same NATS. Clients retry whatever failed meanwhile (at-least-once: a retried
send may store a body twice). At the end every body was processed, the queue
is empty, and no message was returned by a receive that started after a delete
of that message had been confirmed.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, NatsServer

N = 10_000
BATCH = 10
PRODUCERS = 4
CONSUMERS = 4
VISIBILITY = 2
DOOMED_AFTER_BATCHES = 20


@dataclass
class Ledger:
    processed: set[str] = field(default_factory=set)  # bodies a healthy consumer handled
    deleted_at: dict[str, float] = field(default_factory=dict)  # message_id -> when a delete was confirmed
    violations: list[str] = field(default_factory=list)
    redelivered: set[str] = field(default_factory=set)  # bodies seen with receive_count > 1
    doomed_bodies: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    restarted: asyncio.Event = field(default_factory=asyncio.Event)
    halfway: asyncio.Event = field(default_factory=asyncio.Event)


async def retrying(call: Callable[[], Awaitable[httpx.Response]], deadline: float) -> httpx.Response:
    """Repeat a request through connection failures and 503s (the gateway restarting)."""
    while True:
        try:
            response = await call()
            if response.status_code != 503:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not come back")
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_nothing_lost_nothing_kept(nats_server: NatsServer, make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(nats_server.url)
    _, key = gw.new_user(plan="pro")  # the free plan's publish rate would make this a billing test
    token = gw.token(key)
    q = "load-" + secrets.token_hex(4)
    url = f"/api/v1/queues/{q}"
    ledger = Ledger()
    deadline = time.monotonic() + 500
    limits = httpx.Limits(max_connections=32)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30, limits=limits) as client:
        assert (await client.put(url, json={"visibility_timeout": VISIBILITY})).status_code == 201

        async def produce(first: int, last: int) -> None:
            for start in range(first, last, BATCH):
                pending = {f"e{i}": f"m{i}" for i in range(start, min(start + BATCH, last))}
                while pending:
                    entries = [{"id": k, "body": v} for k, v in pending.items()]
                    answer = await retrying(
                        functools.partial(client.post, url + "/messages/batch", json={"entries": entries}), deadline
                    )
                    assert answer.status_code == 200, answer.text
                    for ok in answer.json()["successful"]:
                        pending.pop(ok["id"])
                    if pending:  # refused entries (a rate limit): retry them a little later
                        await asyncio.sleep(0.1)

        async def consume(doomed: bool) -> None:
            batches = 0
            while not ledger.done.is_set():
                started = time.monotonic()
                answer = await retrying(
                    lambda: client.get(url + "/messages", params={"max": BATCH, "wait": 1}), deadline
                )
                assert answer.status_code == 200, answer.text
                messages: list[dict[str, Any]] = answer.json()["messages"]
                for m in messages:
                    confirmed = ledger.deleted_at.get(m["message_id"])
                    if confirmed is not None and confirmed < started:
                        ledger.violations.append(f"{m['body']} delivered after its delete")
                    if m["receive_count"] > 1:
                        ledger.redelivered.add(m["body"])
                if not messages:
                    continue
                batches += 1
                if doomed and batches > DOOMED_AFTER_BATCHES:
                    ledger.doomed_bodies = [m["body"] for m in messages]
                    return  # killed mid-way: these are never deleted by it
                ledger.processed.update(m["body"] for m in messages)
                if len(ledger.processed) >= N // 2:
                    ledger.halfway.set()
                entries = [{"id": f"d{i}", "receipt_handle": m["receipt_handle"]} for i, m in enumerate(messages)]
                try:
                    deleted = await client.post(url + "/messages/batch-delete", json={"entries": entries})
                except httpx.TransportError:
                    continue  # not confirmed: the message comes back after its visibility timeout
                if deleted.status_code != 200:
                    continue
                confirmed_at = time.monotonic()
                by_id = {f"d{i}": m for i, m in enumerate(messages)}
                for ok in deleted.json()["successful"]:
                    ledger.deleted_at.setdefault(by_id[ok["id"]]["message_id"], confirmed_at)

        async def restart_halfway() -> None:
            await ledger.halfway.wait()
            await asyncio.to_thread(gw.stop)
            await asyncio.to_thread(gw.start)
            ledger.restarted.set()

        async def until_empty() -> None:
            while True:
                if len(ledger.processed) == N and ledger.restarted.is_set():
                    info = await retrying(lambda: client.get(url), deadline)
                    doc = info.json()
                    counts = (doc["approximate_visible"], doc["approximate_in_flight"], doc["approximate_delayed"])
                    if counts == (0, 0, 0):
                        ledger.done.set()
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"processed {len(ledger.processed)} of {N}")
                await asyncio.sleep(0.2)

        share = N // PRODUCERS
        tasks = [asyncio.create_task(produce(i * share, (i + 1) * share)) for i in range(PRODUCERS)]
        tasks += [asyncio.create_task(consume(doomed=i == 0)) for i in range(CONSUMERS + 1)]
        tasks += [asyncio.create_task(restart_halfway()), asyncio.create_task(until_empty())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

        print(
            f"processed {len(ledger.processed)}, redelivered {len(ledger.redelivered)}, "
            f"deletes confirmed {len(ledger.deleted_at)}, doomed batch {len(ledger.doomed_bodies)}"
        )
        assert ledger.processed == {f"m{i}" for i in range(N)}
        assert ledger.violations == []
        assert ledger.doomed_bodies, "the doomed consumer never took a batch"
        assert set(ledger.doomed_bodies) <= ledger.redelivered | ledger.processed
        assert any(body in ledger.redelivered for body in ledger.doomed_bodies)
        # Nothing kept: empty, and nothing comes back after the visibility timeout either.
        final = await client.get(url + "/messages", params={"max": BATCH, "wait": VISIBILITY + 1})
        assert final.json()["messages"] == []
        doc = (await client.get(url)).json()
        assert (doc["approximate_visible"], doc["approximate_in_flight"], doc["approximate_delayed"]) == (0, 0, 0)
