"""Outgoing webhooks: delivery rate and publish-to-receipt delay, against a bare httpx client, same run.

    python bench/webhooks.py [--messages 1000] [--rounds 2]

Starts a real nats-server -js, one gateway and a local receiver (uvicorn, raw
ASGI, in this process). Three measurements:

1. webhook: N messages published over HTTP (8 concurrent publishers) to a
   topic with a webhook; deliveries per second at the receiver and the p50/p99
   delay from the publish request to its receipt (a backlog builds up when
   publishing outpaces delivery); the same with a batching webhook (50 per
   request); and the delay of messages published at 50/s, below capacity;
2. baseline: a bare httpx client POSTing the same N bodies to the same receiver
   one after another (what in-order delivery to one endpoint allows at best);
3. the publish rate over HTTP with and without a webhook attached to the topic
   (alternating rounds, medians): the overhead a webhook puts on publishing.
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
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            for topic, extra in (("hooked", {}), ("batched", {"batch": {"max_messages": 50, "max_wait_ms": 20}})):
                created = await http.post(gw.base_url + "/api/v1/webhooks", json={"url": url, "filter": topic, **extra})
                assert created.status_code == 201, created.text

        # 1. through the webhook
        receiver.reset(messages)
        sent, _ = await publish_all(gw, token, "hooked", messages)
        await asyncio.wait_for(receiver.done.wait(), 300)
        delays = [receiver.arrived[seq] - at for seq, at in sent.items()]
        span = max(receiver.arrived.values()) - min(sent.values())
        webhook_rate = messages / span

        # 1b. through a batching webhook (up to 50 messages per request)
        receiver.reset(messages)
        sent_b, _ = await publish_all(gw, token, "batched", messages)
        await asyncio.wait_for(receiver.done.wait(), 300)
        batch_rate = messages / (max(receiver.arrived.values()) - min(sent_b.values()))

        # 1c. paced below capacity: the delay of one message, without a backlog
        paced = max(10, messages // 5)
        receiver.reset(paced)
        sent_p, _ = await publish_all(gw, token, "hooked", paced, workers=1, rate=PACE)
        await asyncio.wait_for(receiver.done.wait(), 300)
        paced_delays = [receiver.arrived[seq] - at for seq, at in sent_p.items()]

        # 2. a bare httpx client posting the same bodies in order
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

        # 3. publish rate with and without a webhook on the topic
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

    def ms(value: float) -> str:
        return f"{value * 1000:.1f}"

    print(f"\nwebhooks, {messages} messages of ~100 bytes, one webhook, one receiver (same run)\n")
    print(f"{'':34} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    print(
        f"{'webhook (publish -> receipt)':34} {webhook_rate:12.0f} {ms(percentile(delays, 0.5)):>8} {ms(percentile(delays, 0.99)):>8}"
    )
    print(
        f"{'bare httpx client, in order':34} {bare_rate:12.0f} {ms(percentile(bare, 0.5)):>8} {ms(percentile(bare, 0.99)):>8}"
    )
    print(f"{'ratio webhook / bare':34} {webhook_rate / bare_rate:12.2f}")
    print(f"{'batching webhook (50 per request)':34} {batch_rate:12.0f}")
    print(
        f"{f'webhook paced at {PACE:.0f}/s':34} {'':12} {ms(percentile(paced_delays, 0.5)):>8} "
        f"{ms(percentile(paced_delays, 0.99)):>8}   (publish request sent -> receipt)"
    )
    w, h = statistics.median(without), statistics.median(with_hook)
    print(f"\npublish rate over HTTP, 8 publishers, median of {rounds} rounds")
    print(f"{'without a webhook':34} {w:12.0f} msg/s")
    print(f"{'with a webhook on the topic':34} {h:12.0f} msg/s")
    print(f"{'ratio with / without':34} {h / w:12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds))
