"""Outgoing webhooks: delivery rate and publish-to-receipt delay, against a bare httpx client, same run.

    python bench/webhooks.py [--messages 1000] [--rounds 2]

Starts a real nats-server -js, one gateway and a local receiver (uvicorn, raw
ASGI, in this process). Measured:

1. deliveries per second of a webhook draining N stored messages (published
   while it was paused), one message per request and 50 per request, against
   a bare httpx client POSTing the same N bodies to the same receiver one
   after another (what in-order delivery to one endpoint allows at best);
2. the p50/p99 delay from a publish request to its receipt, publishing at 50/s
   (below capacity, so no backlog), against the bare client's request latency;
3. the publish rate over HTTP with and without a webhook delivering from the
   topic meanwhile (alternating rounds, medians): what a webhook costs publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Gateway, NatsServer, free_port, temp_dir

PACE = 50.0  # messages per second for the delay without a backlog


class Receiver:
    """Records the arrival time of each message by its ``seq`` (webhook) or ``n`` (baseline)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[int, float] = {}
        self.done = asyncio.Event()
        self.expected = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        document = orjson.loads(body)
        now = time.perf_counter()
        for message in document["messages"] if document.get("type") == "batch" else [document]:
            self.arrived.setdefault(int(message["seq"]), now)
        if len(self.arrived) >= self.expected:
            self.done.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def reset(self, expected: int) -> None:
        self.arrived = {}
        self.expected = expected
        self.done = asyncio.Event()


async def publish_all(
    gw: Gateway, token: str, topic: str, count: int, workers: int = 8, rate: float | None = None
) -> tuple[dict[int, float], float]:
    """Publish ``count`` messages (at most ``rate`` per second); (send time by seq, elapsed seconds)."""
    sent: dict[int, float] = {}
    budget = iter(range(count))
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:

        async def worker() -> None:
            for n in budget:
                if rate is not None:
                    await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
                started = time.perf_counter()
                answer = await http.post("/api/v1/publish", json={"topic": topic, "message": {"n": n, "pad": "x" * 80}})
                sent[answer.json()["seq"]] = started

        await asyncio.gather(*(worker() for _ in range(workers)))
    return sent, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drain(gw: Gateway, http: httpx.AsyncClient, receiver: Receiver, webhook_id: str, count: int) -> float:
    """Resume a paused webhook with ``count`` messages waiting; deliveries per second until the last arrived."""
    receiver.reset(count)
    began = time.perf_counter()
    assert (await http.post(f"{gw.base_url}/api/v1/webhooks/{webhook_id}/resume")).status_code == 200
    await asyncio.wait_for(receiver.done.wait(), 300)
    return count / (max(receiver.arrived.values()) - began)


async def main(messages: int, rounds: int) -> None:
    store, data = temp_dir("fg-bench-nats-"), temp_dir("fg-bench-gw-")
    nats = NatsServer(store).start()
    env = {"FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "true", "FLOWGATE_BILLING": "off", "FLOWGATE_LOG_LEVEL": "warning"}
    gw = Gateway(nats.url, data, env=env).start()
    receiver = Receiver()
    server = uvicorn.Server(uvicorn.Config(receiver, port=receiver.port, log_level="warning", lifespan="off"))
    serving = asyncio.get_running_loop().create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn.Server offers no event for it
            await asyncio.sleep(0.01)
        _, token = gw.user_token()
        url = f"http://127.0.0.1:{receiver.port}/hook"
        hooks: dict[str, str] = {}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for topic, extra in (("hooked", {}), ("batched", {"batch": {"max_messages": 50, "max_wait_ms": 20}})):
                body = {"url": url, "filter": topic, "paused": True, **extra}
                created = await http.post(gw.base_url + "/api/v1/webhooks", json=body)
                assert created.status_code == 201, created.text
                hooks[topic] = created.json()["id"]

            # 1. a stored backlog drained by the webhook, one message per request, then 50 per request
            await publish_all(gw, token, "hooked", messages)
            webhook_rate = await drain(gw, http, receiver, hooks["hooked"], messages)
            await publish_all(gw, token, "batched", messages)
            batch_rate = await drain(gw, http, receiver, hooks["batched"], messages)

        # 2. the delay of one message published at a pace below capacity (no backlog)
        paced = max(10, messages // 5)
        receiver.reset(paced)
        sent, _ = await publish_all(gw, token, "hooked", paced, workers=1, rate=PACE)
        await asyncio.wait_for(receiver.done.wait(), 300)
        delays = [receiver.arrived[seq] - at for seq, at in sent.items()]

        # 3. baseline: a bare httpx client posting the same bodies to the same receiver, in order
        receiver.reset(messages)
        bare: list[float] = []
        async with httpx.AsyncClient() as http:
            began = time.perf_counter()
            for n in range(messages):
                started = time.perf_counter()
                body = orjson.dumps({"type": "message", "seq": n, "topic": "hooked", "data": {"n": n, "pad": "x" * 80}})
                await http.post(url, content=body, headers={"content-type": "application/json"})
                bare.append(receiver.arrived[n] - started)
            bare_rate = messages / (time.perf_counter() - began)

        # 4. publish rate with and without a webhook delivering from the topic meanwhile
        without, with_hook = [], []
        for _ in range(rounds):
            receiver.reset(messages)
            _, elapsed = await publish_all(gw, token, "unhooked", messages)
            without.append(messages / elapsed)
            _, elapsed = await publish_all(gw, token, "hooked", messages)
            with_hook.append(messages / elapsed)
            await asyncio.wait_for(receiver.done.wait(), 300)  # let the webhook catch up before the next round
    finally:
        server.should_exit = True
        await serving
        gw.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}"

    print(f"\nwebhooks: {messages} messages of ~100 bytes, one receiver on 127.0.0.1 (same run)\n")
    print(f"{'':40} {'deliveries/s':>12} {'ratio':>6}")
    print(f"{'bare httpx client, in order (baseline)':40} {bare_rate:12.0f} {1:6.2f}")
    print(f"{'webhook draining a backlog':40} {webhook_rate:12.0f} {webhook_rate / bare_rate:6.2f}")
    print(f"{'batching webhook (50 per request)':40} {batch_rate:12.0f} {batch_rate / bare_rate:6.2f}")
    print(f"\n{'delay':40} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'bare httpx client: request sent -> receipt':40} {ms(bare, 0.5):>8} {ms(bare, 0.99):>8}")
    print(f"{f'webhook: publish sent -> receipt, {PACE:.0f}/s':40} {ms(delays, 0.5):>8} {ms(delays, 0.99):>8}")
    w, h = statistics.median(without), statistics.median(with_hook)
    print(f"\npublish rate over HTTP, 8 publishers, median of {rounds} rounds")
    print(f"{'without a webhook':40} {w:12.0f} msg/s")
    print(f"{'with a webhook delivering meanwhile':40} {h:12.0f} msg/s   ratio {h / w:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds))
