"""Outgoing webhooks: delivery rate and publish-to-receipt delay, against a bare httpx client, same run.

    python bench/webhooks.py [--messages 1000] [--rounds 2]

Starts a real nats-server -js, one gateway and a receiver (uvicorn, raw ASGI,
a process of its own), each on free 127.0.0.1 ports. Measured:

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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Gateway, NatsServer, free_port, temp_dir

PACE = 50.0  # messages per second for the delay without a backlog


class Receiver:
    """The receiver (``--receive PORT``, a process of its own): records when each message ``seq`` arrived.

    ``POST /reset`` forgets, ``GET /arrivals`` answers ``{seq: time.monotonic()}`` (CLOCK_MONOTONIC,
    comparable across processes on Linux); anything else POSTed is a webhook request (or a batch).
    """

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = b""
        if scope["path"] == "/reset":
            self.arrived = {}
        elif scope["path"] == "/arrivals":
            answer = orjson.dumps(self.arrived, option=orjson.OPT_NON_STR_KEYS)
        else:
            document = orjson.loads(body)
            now = time.monotonic()
            for message in document["messages"] if document.get("type") == "batch" else [document]:
                self.arrived.setdefault(int(message["seq"]), now)
        await send({"type": "http.response.start", "status": 200 if answer else 204, "headers": []})
        await send({"type": "http.response.body", "body": answer})


class RemoteReceiver:
    """The bench's handle on the receiver process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, __file__, "--receive", str(self.port)])
        self._http = httpx.AsyncClient(base_url=self.url)

    async def ready(self) -> None:
        async with asyncio.timeout(20):
            while True:
                try:
                    await self._http.post("/reset")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

    async def reset(self) -> None:
        await self._http.post("/reset")

    async def arrivals(self, count: int, timeout: float = 300) -> dict[int, float]:
        """When each message arrived, once ``count`` did."""
        async with asyncio.timeout(timeout):
            while True:
                arrived = {int(k): v for k, v in (await self._http.get("/arrivals")).json().items()}
                if len(arrived) >= count:
                    return arrived
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self._http.aclose()
        self.process.terminate()
        self.process.wait(10)


async def publish_all(
    gw: Gateway, token: str, topic: str, count: int, workers: int = 8, rate: float | None = None
) -> tuple[dict[int, float], float]:
    """Publish ``count`` messages (at most ``rate`` per second); (send time by seq, elapsed seconds)."""
    sent: dict[int, float] = {}
    budget = iter(range(count))
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:

        async def worker() -> None:
            for n in budget:
                if rate is not None:
                    await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
                started = time.monotonic()
                answer = await http.post("/api/v1/publish", json={"topic": topic, "message": {"n": n, "pad": "x" * 80}})
                sent[answer.json()["seq"]] = started

        await asyncio.gather(*(worker() for _ in range(workers)))
    return sent, time.monotonic() - began


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drain(gw: Gateway, http: httpx.AsyncClient, receiver: RemoteReceiver, webhook_id: str, count: int) -> float:
    """Resume a paused webhook with ``count`` messages waiting; deliveries per second until the last arrived."""
    await receiver.reset()
    began = time.monotonic()
    assert (await http.post(f"{gw.base_url}/api/v1/webhooks/{webhook_id}/resume")).status_code == 200
    return count / (max((await receiver.arrivals(count)).values()) - began)


async def main(messages: int, rounds: int) -> None:
    store, data = temp_dir("fg-bench-nats-"), temp_dir("fg-bench-gw-")
    nats = NatsServer(store).start()
    env = {"FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "true", "FLOWGATE_BILLING": "off", "FLOWGATE_LOG_LEVEL": "warning"}
    gw = Gateway(nats.url, data, env=env).start()
    receiver = RemoteReceiver()
    try:
        await receiver.ready()
        _, token = gw.user_token()
        url = f"{receiver.url}/hook"
        hooks: dict[str, str] = {}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for topic, extra in (("hooked", {}), ("batched", {"batch": {"max_messages": 50, "max_wait_ms": 20}})):
                body = {"url": url, "filter": topic, "paused": True, **extra}
                created = await http.post(gw.base_url + "/api/v1/webhooks", json=body)
                assert created.status_code == 201, created.text
                hooks[topic] = created.json()["id"]

            # 1. a stored backlog drained by the webhook, one message per request, then 50 per request
            process = psutil.Process(gw.pid)
            cpu = cpu_seconds(process)
            await publish_all(gw, token, "hooked", messages)
            publish_cpu, cpu = (cpu_seconds(process) - cpu) / messages, cpu_seconds(process)
            webhook_rate = await drain(gw, http, receiver, hooks["hooked"], messages)
            delivery_cpu = (cpu_seconds(process) - cpu) / messages
            await publish_all(gw, token, "batched", messages)
            cpu = cpu_seconds(process)
            batch_rate = await drain(gw, http, receiver, hooks["batched"], messages)
            batch_cpu = (cpu_seconds(process) - cpu) / messages

        # 2. the delay of one message published at a pace below capacity (no backlog)
        paced = max(10, messages // 5)
        await receiver.reset()
        sent, _ = await publish_all(gw, token, "hooked", paced, workers=1, rate=PACE)
        arrived = await receiver.arrivals(paced)
        delays = [arrived[seq] - at for seq, at in sent.items()]

        # 3. baseline: a bare httpx client posting the same bodies to the same receiver, in order
        await receiver.reset()
        started: list[float] = []
        async with httpx.AsyncClient() as http:
            began = time.monotonic()
            for n in range(messages):
                started.append(time.monotonic())
                raw = orjson.dumps({"type": "message", "seq": n, "topic": "hooked", "data": {"n": n, "pad": "x" * 80}})
                await http.post(url, content=raw, headers={"content-type": "application/json"})
            bare_rate = messages / (time.monotonic() - began)
        arrived = await receiver.arrivals(messages)
        bare = [arrived[n] - at for n, at in enumerate(started)]

        # 4. publish rate with and without a webhook delivering from the topic meanwhile
        without, with_hook = [], []
        for _ in range(rounds):
            await receiver.reset()
            _, elapsed = await publish_all(gw, token, "unhooked", messages)
            without.append(messages / elapsed)
            _, elapsed = await publish_all(gw, token, "hooked", messages)
            with_hook.append(messages / elapsed)
            await receiver.arrivals(messages)  # let the webhook catch up before the next round
    finally:
        await receiver.close()
        gw.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}"

    print(f"\nwebhooks: {messages} messages of ~100 bytes, one receiver on 127.0.0.1 (same run)\n")
    print(f"{'':40} {'deliveries/s':>12} {'ratio':>6} {'gateway CPU µs/msg':>19}")
    print(f"{'bare httpx client, in order (baseline)':40} {bare_rate:12.0f} {1:6.2f}")
    print(
        f"{'webhook draining a backlog':40} {webhook_rate:12.0f} {webhook_rate / bare_rate:6.2f} {delivery_cpu * 1e6:19.0f}"
    )
    print(
        f"{'batching webhook (50 per request)':40} {batch_rate:12.0f} {batch_rate / bare_rate:6.2f} {batch_cpu * 1e6:19.0f}"
    )
    print(f"{'(publishing one message over HTTP)':40} {'':12} {'':6} {publish_cpu * 1e6:19.0f}")
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
    parser.add_argument("--receive", type=int, metavar="PORT", help="run the receiver on PORT (used by the bench)")
    arguments = parser.parse_args()
    if arguments.receive:
        uvicorn.run(Receiver(), port=arguments.receive, log_level="warning", lifespan="off", loop="uvloop")
    else:
        asyncio.run(main(arguments.messages, arguments.rounds))
