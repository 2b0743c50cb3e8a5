"""WebSocket fan-out under load, on a gateway of its own (so its RSS is measured alone).

- A client that never reads while 50,000 messages are published: the gateway's
  RSS stays under a ceiling, the other subscribers get every message in order,
  and the slow one is closed with 4008 and counted.
- 1,000 concurrent subscribers of one topic each receive every message of a burst.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.harness import Gateway, NatsServer

pytestmark = pytest.mark.slow

TOTAL = 50_000
PUBLISHERS = 5
PAYLOAD = "x" * 400
LAG = 2_000  # how far the publishers may run ahead of the slowest reader (each connection holds 5,000)
RSS_CEILING = 40 * 1024 * 1024  # growth allowed while 50,000 messages go by; an unbounded buffer grew ~225 MB


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        pytest.skip(f"needs {wanted} open files")


async def connect(gateway: Gateway, token: str, **kwargs: Any) -> ClientConnection:
    return await websockets.connect(f"{gateway.ws_url}/ws?token={token}", max_size=None, **kwargs)


async def request(ws: ClientConnection, frame_id: int, **frame: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({**frame, "id": frame_id}).decode())
    while True:
        answer: dict[str, Any] = orjson.loads(await ws.recv())
        if answer.get("id") == frame_id:
            assert answer["action"] == "ack", answer
            return answer


class RssSampler:
    """The peak RSS of a process, sampled in a thread every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    # A load test, not a billing test. The two readers share this test process with five publishers,
    # so on a loaded machine they could fall behind the gateway by any amount; the publishers wait
    # whenever they are more than LAG messages ahead of the slowest reader, and every connection has
    # room for 5,000 (about 2.5 MB, well under the RSS ceiling), so only the client that never reads fills it.
    gateway = make_gateway(nats_server.url, env={"FLOWGATE_BILLING": "false", "FLOWGATE_OUTBOUND_QUEUE": "5000"})
    _, key = gateway.new_user(plan="pro")
    token = gateway.token(key, ttl=3600)

    # The slow client: a tiny receive buffer, and it never calls recv() until the end.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.http_port))
    slow = await websockets.connect(f"{gateway.ws_url}/ws?token={token}", sock=sock, max_queue=4)
    await request(slow, 1, action="subscribe", topic="firehose")

    readers = [await connect(gateway, token) for _ in range(2)]
    for reader in readers:
        await request(reader, 1, action="subscribe", topic="firehose")

    received_counts = [0] * len(readers)
    progress = asyncio.Condition()
    sent = 0

    async def read_all(reader: int, ws: ClientConnection) -> list[tuple[int, int, int]]:
        got: list[tuple[int, int, int]] = []
        while len(got) < TOTAL:
            frame = orjson.loads(await ws.recv())
            if frame["action"] == "message":
                got.append((frame["seq"], frame["data"]["p"], frame["data"]["n"]))
                if len(got) % 100 == 0 or len(got) == TOTAL:
                    async with progress:
                        received_counts[reader] = len(got)
                        progress.notify_all()
        return got

    def caught_up() -> bool:
        return sent - min(received_counts) <= LAG

    async def publish(ws: ClientConnection, index: int) -> None:
        nonlocal sent
        share = TOTAL // PUBLISHERS
        for n in range(share):
            if n % 100 == 0:
                async with progress:
                    await progress.wait_for(caught_up)
            sent += 1
            await ws.send(
                orjson.dumps(
                    {"action": "publish", "topic": "firehose", "message": {"p": index, "n": n, "pad": PAYLOAD}}
                ).decode()
            )
        await ws.send('{"action": "ping"}')  # answered after every publish before it was stored
        while (frame := orjson.loads(await ws.recv()))["action"] != "pong":
            errors.append(frame)

    errors: list[dict[str, Any]] = []

    publishers = [await connect(gateway, token) for _ in range(PUBLISHERS)]
    baseline = psutil.Process(gateway.pid).memory_info().rss
    with RssSampler(gateway.pid) as rss:
        consuming = [asyncio.create_task(read_all(i, r)) for i, r in enumerate(readers)]
        async with asyncio.timeout(240):
            await asyncio.gather(*(publish(ws, i) for i, ws in enumerate(publishers)))
            assert errors == []
            received = await asyncio.gather(*consuming)

    growth = rss.peak - baseline
    print(f"gateway RSS: baseline {baseline / 2**20:.1f} MiB, peak {rss.peak / 2**20:.1f} MiB")
    assert growth < RSS_CEILING, f"RSS grew by {growth / 2**20:.1f} MiB"
    for got in received:  # the others got everything, once, in order; each publisher's messages in its order
        seqs = [seq for seq, _, _ in got]
        assert len(seqs) == TOTAL and len(set(seqs)) == TOTAL and seqs == sorted(seqs)
        for index in range(PUBLISHERS):
            assert [n for _, p, n in got if p == index] == list(range(TOTAL // PUBLISHERS))

    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(gateway.base_url + "/metrics")).text
    assert 'flowgate_slow_consumers_closed_total{protocol="ws"} 1.0' in metrics

    # When the slow client reads at last, it finds what was already in its socket, then the 4008 close.
    drained = 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(60):
            while True:
                await slow.recv()
                drained += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    assert drained < TOTAL
    for ws in (*readers, *publishers):
        await ws.close()


async def test_a_thousand_subscribers_receive_every_message_of_a_burst(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    subscribers_count, burst = 1000, 200
    raise_fd_limit(4096)  # before the gateway starts: it inherits the limit
    # A load test, not a billing test; the 1,000 subscribers share this test process, so every
    # connection gets room for the whole burst however far behind its reader falls.
    gateway = make_gateway(nats_server.url, env={"FLOWGATE_BILLING": "false", "FLOWGATE_OUTBOUND_QUEUE": "5000"})
    _, key = gateway.new_user(plan="pro")
    token = gateway.token(key, ttl=3600)

    gate = asyncio.Semaphore(64)

    async def subscriber() -> ClientConnection:
        async with gate:
            ws = await connect(gateway, token)
            await request(ws, 1, action="subscribe", topic="broadcast")
            return ws

    subscribers = await asyncio.gather(*(subscriber() for _ in range(subscribers_count)))

    async def receive(ws: ClientConnection) -> list[int]:
        values: list[int] = []
        while len(values) < burst:
            frame = orjson.loads(await ws.recv())
            if frame["action"] == "message":
                values.append(frame["data"])
        return values

    consuming = [asyncio.create_task(receive(ws)) for ws in subscribers]
    publisher = await connect(gateway, token)
    for n in range(burst):
        await publisher.send(orjson.dumps({"action": "publish", "topic": "broadcast", "message": n}).decode())
    async with asyncio.timeout(180):
        received = await asyncio.gather(*consuming)
    assert all(values == list(range(burst)) for values in received)
    await asyncio.gather(*(ws.close() for ws in (*subscribers, publisher)))
