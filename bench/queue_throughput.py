"""Queue throughput: the gateway's HTTP queue API against JetStream used directly, same pattern, same run.

    python bench/queue_throughput.py [--messages 10000] [--concurrency 32]

Starts a real nats-server -js and the gateway on free ports. For single and
batched (10) operations it measures messages/s of three phases, each with
``--concurrency`` clients in flight:

- send: ``POST .../messages`` (or ``.../messages/batch``) until ``--messages`` are stored;
- receive: ``GET .../messages?max=1`` (or ``max=10``) until all were received (visibility 300 s);
- delete: ``DELETE .../messages/{handle}`` (or ``.../messages/batch-delete``) for every one.

For each phase it prints messages/s, the p50 and p99 latency of one operation
as the client sees it (one HTTP request, or one nats-py call or batch of 10
concurrent calls; calls that found nothing left, which end a phase, are not
counted), and the gateway's RSS (psutil) right after the gateway's phase.

The baseline does the same with nats-py on a work-queue stream with a durable
pull consumer (the gateway's own layout): acknowledged publishes, pull fetches
of 1 or 10, and synchronous acks. The HTTP client is a minimal keep-alive
HTTP/1.1 client so that the load generator is not the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
import psutil
from nats.js import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Gateway, NatsServer, temp_dir

BODY = "x" * 100


class Http:
    """One keep-alive HTTP/1.1 connection: request, then read the answer (no pipelining)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = b"" if document is None else orjson.dumps(document)
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + self.auth + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        content = await self.reader.readexactly(length) if length else b""
        return status, (orjson.loads(content) if content else None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


Phase = tuple[float, float, float]  # messages/s, p50 ms, p99 ms


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN if empty)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def run_phase(workers: int, step: Callable[[int], Awaitable[int]], total: int) -> Phase:
    """Run ``step(worker)`` (returning messages handled) in ``workers`` loops until ``total``.

    Returns messages/s and the p50 and p99 duration of the steps that handled messages, in ms.
    """
    done = 0
    latencies: list[float] = []

    async def loop(worker: int) -> None:
        nonlocal done
        while done < total:
            began = time.perf_counter()
            handled = await step(worker)
            if handled == 0:
                return
            latencies.append(time.perf_counter() - began)
            done += handled

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    rate = done / (time.perf_counter() - started)
    latencies.sort()
    return rate, percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000


def rss_mb(pid: int) -> float:
    rss: int = psutil.Process(pid).memory_info().rss  # psutil has no annotations
    return rss / 2**20


async def gateway_rates(
    gateway: Gateway, token: str, messages: int, concurrency: int, batch: int
) -> tuple[dict[str, Phase], dict[str, float]]:
    """The gateway's figures per phase, and its RSS in MB right after each phase."""
    queue = f"bench-{batch}"
    path = f"/api/v1/queues/{queue}"
    port = gateway.http_port
    conns = [Http("127.0.0.1", port, token) for _ in range(concurrency)]
    status, _ = await conns[0].request("PUT", path, {"visibility_timeout": 300})
    assert status in (200, 201), status
    handles: list[str] = []

    async def send(w: int) -> int:
        if batch == 1:
            status, _ = await conns[w].request("POST", path + "/messages", {"body": BODY})
            assert status == 200, status
            return 1
        entries = [{"id": str(i), "body": BODY} for i in range(batch)]
        status, answer = await conns[w].request("POST", path + "/messages/batch", {"entries": entries})
        assert status == 200 and not answer["failed"], answer
        return batch

    async def receive(w: int) -> int:
        status, answer = await conns[w].request("GET", f"{path}/messages?max={batch}")
        assert status == 200, answer
        got = answer["messages"]
        handles.extend(m["receipt_handle"] for m in got)
        return len(got)

    async def delete(w: int) -> int:
        if not handles:
            return 0
        if batch == 1:
            status, _ = await conns[w].request("DELETE", f"{path}/messages/{handles.pop()}")
            assert status == 204, status
            return 1
        take = [handles.pop() for _ in range(min(batch, len(handles)))]
        entries = [{"id": str(i), "receipt_handle": h} for i, h in enumerate(take)]
        status, answer = await conns[w].request("POST", path + "/messages/batch-delete", {"entries": entries})
        assert status == 200 and not answer["failed"], answer
        return len(take)

    phases: dict[str, Phase] = {}
    rss: dict[str, float] = {}
    for op, step in (("send", send), ("receive", receive), ("delete", delete)):
        phases[op] = await run_phase(concurrency, step, messages)
        rss[op] = rss_mb(gateway.pid)
    for conn in conns:
        conn.close()
    return phases, rss


async def jetstream_rates(nats_url: str, messages: int, concurrency: int, batch: int) -> dict[str, Phase]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"BENCH_Q{batch}"
    subject = f"bench.q{batch}"
    await js.add_stream(
        api.StreamConfig(
            name=stream, subjects=[subject], storage=api.StorageType.FILE, retention=api.RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            durable_name="worker", ack_policy=api.AckPolicy.EXPLICIT, ack_wait=300, max_ack_pending=120_000
        ),
    )
    subs = [await js.pull_subscribe_bind("worker", stream) for _ in range(concurrency)]
    body = orjson.dumps(BODY)
    held: list[Any] = []

    async def send(w: int) -> int:
        await asyncio.gather(*(js.publish(subject, body) for _ in range(batch)))
        return batch

    async def receive(w: int) -> int:
        try:
            got = await subs[w].fetch(batch, timeout=1)
        except nats.errors.TimeoutError:
            return 0
        held.extend(got)
        return len(got)

    async def delete(w: int) -> int:
        take = [held.pop() for _ in range(min(batch, len(held)))]
        await asyncio.gather(*(m.ack_sync() for m in take))
        return len(take)

    phases = {
        "send": await run_phase(concurrency, send, messages),
        "receive": await run_phase(concurrency, receive, messages),
        "delete": await run_phase(concurrency, delete, messages),
    }
    await js.delete_stream(stream)
    await nc.close()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    store, data = temp_dir("bench-nats-"), temp_dir("bench-gw-")
    server = NatsServer(store).start()
    plans = data / "plans.json"  # a plan whose rate limit and quota stay out of the way
    unlimited = {"quota": 10**12, "rate": 10**7, "burst": 10**8, "max_connections": 10**6, "max_message_bytes": 1 << 20}
    plans.write_bytes(orjson.dumps({"plans": {"free": unlimited}}))
    env = {"FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_PLANS_FILE": str(plans)}
    gateway = Gateway(server.url, data, env=env).start()
    try:
        _, token = gateway.user_token(app="bench")
        print(
            f"\nQueue throughput, {args.messages:,} messages of 100 bytes, {args.concurrency} clients in flight; "
            f"gateway RSS at start {rss_mb(gateway.pid):.0f} MB\n"
            "(latency: one request or one batch, as the client sees it; RSS: the gateway, right after its phase)\n\n"
            "| pattern | operation | flowgate HTTP msg/s | JetStream nats-py msg/s | ratio "
            "| flowgate p50 / p99 ms | JetStream p50 / p99 ms | gateway RSS MB |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|"
        )
        for batch in (1, 10):
            ours, rss = asyncio.run(gateway_rates(gateway, token, args.messages, args.concurrency, batch))
            theirs = asyncio.run(jetstream_rates(server.url, args.messages, args.concurrency, batch))
            label = "single" if batch == 1 else f"batch of {batch}"
            for op in ("send", "receive", "delete"):
                (rate, p50, p99), (base, base_p50, base_p99) = ours[op], theirs[op]
                print(
                    f"| {label} | {op} | {rate:,.0f} | {base:,.0f} | {rate / base:.2f} "
                    f"| {p50:.2f} / {p99:.2f} | {base_p50:.2f} / {base_p99:.2f} | {rss[op]:.0f} |"
                )
    finally:
        gateway.stop()
        server.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
