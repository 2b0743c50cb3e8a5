"""A long poll returns as soon as a message arrives: within 100 ms of the send."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx

from tests.harness import Gateway

TRIALS = 5


async def test_long_poll_returns_within_100ms_of_a_send(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    q = "lp-" + secrets.token_hex(4)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=30) as client:
        assert (await client.put(f"/api/v1/queues/{q}", json={})).status_code == 201
        latencies = []
        for trial in range(TRIALS):
            started = time.monotonic()
            poll = asyncio.create_task(client.get(f"/api/v1/queues/{q}/messages", params={"wait": 20, "max": 10}))
            await asyncio.sleep(0.3)  # not a correctness wait: it only lets the poll reach the server and wait there
            assert not poll.done()
            sent = await client.post(f"/api/v1/queues/{q}/messages", json={"body": f"m{trial}"})
            stored_at = time.monotonic()
            assert sent.status_code == 200, sent.text
            answer = await poll
            latencies.append(time.monotonic() - stored_at)
            assert answer.status_code == 200, answer.text
            [message] = answer.json()["messages"]
            assert message["body"] == f"m{trial}"
            assert stored_at - started >= 0.3  # it really waited for the message
            deleted = await client.delete(f"/api/v1/queues/{q}/messages/{message['receipt_handle']}")
            assert deleted.status_code == 204
        print("long-poll latencies after the send (ms):", [round(x * 1000, 1) for x in latencies])
        assert max(latencies) < 0.1, latencies
