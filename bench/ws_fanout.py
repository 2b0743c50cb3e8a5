"""WebSocket fan-out: the gateway against a bare `websockets` broadcast server, same load, same run.

    python bench/ws_fanout.py [--subscribers 1,100,1000] [--messages 500] [--idle 5000]

Starts a real nats-server -js, the gateway, and a bare ``websockets`` server
(uvloop, ``broadcast()``, one rendered frame per message, no storage) on free
ports. For each subscriber count, one publisher sends ``--messages`` messages
(100-byte strings) as fast as it can and the subscribers count frames. Per
server and subscriber count the table shows:

- deliveries per second from the first publish to the last delivery;
- p50 and p99 delivery latency: each message starts with the publisher's
  ``time.perf_counter_ns()`` (19 digits; same host, same clock), and a sample
  of the subscribers (every k-th, at most 100 of them, all their messages)
  subtracts it from the receive time of the socket read that carried the
  frame. The publisher sends as fast as it can, so this is latency at
  saturation and includes queueing behind the earlier messages of the burst;
- the server process's peak RSS during the run (sampled every 10 ms).

Then ``--idle`` connections (each subscribed, then idle) are opened and the RSS
growth of the server process per connection is reported.

The clients are minimal raw asyncio protocols (frame counting; the sampled ones
also find ``"data":"`` in each frame and parse the 19 digits after it, no JSON
parsing) so that the server, not the client, is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Gateway, NatsServer, free_port, temp_dir

STAMP = b"0" * 19  # placeholder for the send time, perf_counter_ns zero-padded to 19 digits
MESSAGE = STAMP.decode() + "x" * 81  # 100 characters
DATA = b'"data":"'  # both servers render the message as ..."data":"<MESSAGE>"...


# -- the bare baseline server ---------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """A bare websockets server: /sub joins the broadcast set, each frame sent to /pub is broadcast."""
    import uvloop
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path.startswith("/pub"):
            seq = 0
            try:
                async for frame in ws:
                    seq += 1
                    message = orjson.loads(frame)["message"]
                    rendered = orjson.dumps({"action": "message", "topic": "bench", "data": message, "seq": seq})
                    broadcast(subscribers, rendered.decode())
            except ConnectionClosed:  # the bench drops its clients without a closing handshake
                pass
            return
        subscribers.add(ws)
        try:
            await ws.send('{"action":"ack","id":1}')
            await ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            subscribers.discard(ws)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
            print("ready", flush=True)
            await asyncio.Future()

    uvloop.run(main())


# -- a minimal client ----------------------------------------------------------------------------


def _masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    mask = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(length, "big")
    return header + key + masked


class RawClient(asyncio.Protocol):
    """Handshake, then count the server's data frames; answers pings."""

    def __init__(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.buffer = bytearray()
        self.open = False
        self.frames = 0
        self.target = 0
        self.latencies: list[int] | None = None  # ns per data frame, on sampled clients only
        self.ready: asyncio.Future[None] = loop.create_future()
        self.reached: asyncio.Future[float] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection's transport (asyncio types the parameter as its base class); uvloop's TCPTransport
        # is not an asyncio.Transport subclass, so an isinstance check would refuse it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_masked_frame(text))

    def expect(self, count: int) -> None:
        self.target = count
        self._check()

    def _check(self) -> None:
        if self.target and self.frames >= self.target and not self.reached.done():
            self.reached.set_result(time.perf_counter())

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {bytes(buf[:end])!r}")
            del buf[: end + 4]
            self.open = True
            self.ready.set_result(None)
        pos, size = 0, len(buf)
        latencies = self.latencies
        now = time.perf_counter_ns() if latencies is not None else 0
        while size - pos >= 2:
            length, header = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < header + length:
                break
            opcode = buf[pos] & 0x0F
            if opcode in (1, 2):
                self.frames += 1
                if latencies is not None:
                    start = pos + header
                    at = buf.find(DATA, start, start + length)
                    if at >= 0:
                        latencies.append(now - int(buf[at + 8 : at + 27]))
            elif opcode == 9 and self.transport is not None:
                self.transport.write(_masked_frame(bytes(buf[pos + header : pos + header + length]), opcode=10))
            pos += header + length
        del buf[:pos]
        self._check()


@dataclass
class Target:
    name: str
    port: int
    pid: int
    sub_path: str
    pub_path: str
    subscribe: bytes | None  # the frame a subscriber sends (answered by one ack frame)
    publish: bytes  # contains STAMP once, replaced by the send time


@dataclass
class FanoutResult:
    rate: float  # deliveries per second
    p50_ms: float
    p99_ms: float
    rss_mb: float  # the server's peak RSS during the run


async def open_clients(target: Target, count: int, path: str, *, subscriber: bool = True) -> list[RawClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)

    async def one() -> RawClient:
        async with gate:
            _, client = await loop.create_connection(
                lambda: RawClient("127.0.0.1", target.port, path), "127.0.0.1", target.port
            )
            await client.ready
            if not subscriber:
                return client
            if target.subscribe is not None:
                client.send_text(target.subscribe)
            client.expect(1)  # the subscription's ack (or the bare server's greeting)
            await client.reached
            return client

    return await asyncio.gather(*(one() for _ in range(count)))


async def close_clients(clients: list[RawClient]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.gather(*(c.closed for c in clients))


def percentile(ordered: list[int], fraction: float) -> int:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def peak_rss(pid: int, stop: asyncio.Event) -> int:
    """The highest RSS of ``pid`` seen, sampled every 10 ms until ``stop`` is set."""
    process, peak = psutil.Process(pid), 0
    while True:
        rss: int = process.memory_info().rss  # psutil has no annotations
        peak = max(peak, rss)
        if stop.is_set():
            return peak
        try:
            await asyncio.wait_for(stop.wait(), 0.01)
        except TimeoutError:
            pass


async def fanout(target: Target, subscribers: int, messages: int) -> FanoutResult:
    """Deliveries/s, delivery latency and server RSS for ``messages`` from one publisher to ``subscribers``."""
    subs = await open_clients(target, subscribers, target.sub_path)
    (publisher,) = await open_clients(target, 1, target.pub_path, subscriber=False)
    sampled = subs[:: max(1, subscribers // 100)]
    for client in subs:
        client.reached = asyncio.get_running_loop().create_future()
        client.expect(1 + messages)
    for client in sampled:
        client.latencies = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(peak_rss(target.pid, stop))
    await asyncio.sleep(0)  # first RSS sample before the burst
    head, tail = target.publish.split(STAMP)
    start = time.perf_counter()
    for _ in range(messages):
        publisher.send_text(b"%s%019d%s" % (head, time.perf_counter_ns(), tail))
    async with asyncio.timeout(300):
        ends = await asyncio.gather(*(c.reached for c in subs))
    elapsed = max(ends) - start
    stop.set()
    rss = await sampler
    await close_clients([*subs, publisher])
    latencies = sorted(ns for c in sampled for ns in c.latencies or ())
    if len(latencies) != len(sampled) * messages:
        raise RuntimeError(f"{target.name}: {len(latencies)} latency samples, expected {len(sampled) * messages}")
    return FanoutResult(
        subscribers * messages / elapsed,
        percentile(latencies, 0.50) / 1e6,
        percentile(latencies, 0.99) / 1e6,
        rss / 2**20,
    )


async def idle_rss(target: Target, count: int) -> tuple[float, float]:
    """(KB per idle connection, server RSS MB with them open)."""
    process = psutil.Process(target.pid)
    warm = await open_clients(target, 20, target.sub_path)
    await asyncio.sleep(1)
    before = process.memory_info().rss
    clients = await open_clients(target, count, target.sub_path)
    await asyncio.sleep(2)  # let the server settle (no traffic flows)
    after = process.memory_info().rss
    await close_clients([*clients, *warm])
    return (after - before) / count / 1024, after / 2**20


def start_bare_server() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the bare websockets server did not start")
    return process, port


async def run(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 1000)), hard))
    store, data = temp_dir("bench-nats-"), temp_dir("bench-gw-")
    nats = NatsServer(store).start()
    gateway = Gateway(nats.url, data, env={"FLOWGATE_OUTBOUND_QUEUE": "10000"}).start()
    bare, bare_port = start_bare_server()
    try:
        _, key = gateway.new_user(plan="pro")
        token = gateway.token(key, app="bench", ttl=3600)
        publish = orjson.dumps({"action": "publish", "topic": "bench", "message": MESSAGE})
        targets = [
            Target("bare websockets broadcast()", bare_port, bare.pid, "/sub", "/pub", None, publish),
            Target(
                "flowgate /ws (JetStream, hub)",
                gateway.http_port,
                gateway.pid,
                f"/ws?token={token}",
                f"/ws?token={token}",
                orjson.dumps({"action": "subscribe", "topic": "bench", "id": 1}),
                publish,
            ),
        ]
        for target in targets:  # warm-up
            await fanout(target, 10, 200)
        counts = [int(n) for n in args.subscribers.split(",") if n.strip()]
        results: dict[tuple[str, int], FanoutResult] = {}
        for count in counts:
            for target in targets:
                results[target.name, count] = await fanout(target, count, args.messages)
        idle = {t.name: await idle_rss(t, args.idle) for t in targets}
    finally:
        bare.terminate()
        gateway.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    bare_name, gw_name = targets[0].name, targets[1].name
    print(f"\nWebSocket fan-out: 1 publisher, {args.messages} messages of {len(MESSAGE)} bytes, deliveries/s\n")
    print("(latency: publish to receipt in ms, every message at up to 100 sampled subscribers, at saturation: the")
    print(" burst is sent at once, so it includes queueing behind earlier messages; RSS: the server's peak during")
    print(" the run; ratios are flowgate / bare)\n")
    print(
        f"| subscribers | {bare_name} | {gw_name} | ratio "
        "| bare p50 | bare p99 | flowgate p50 | flowgate p99 | p99 ratio "
        "| bare RSS MB | flowgate RSS MB | RSS ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in counts:
        b, g = results[bare_name, count], results[gw_name, count]
        print(
            f"| {count:,} | {b.rate:,.0f} | {g.rate:,.0f} | {g.rate / b.rate:.2f} "
            f"| {b.p50_ms:.1f} | {b.p99_ms:.1f} | {g.p50_ms:.1f} | {g.p99_ms:.1f} | {g.p99_ms / b.p99_ms:.2f} "
            f"| {b.rss_mb:.0f} | {g.rss_mb:.0f} | {g.rss_mb / b.rss_mb:.2f} |"
        )
    if 1 in counts:
        print("\n(1 subscriber is bound by the publish path: every message is stored in JetStream and acknowledged,")
        print(" pipelined up to 256 per connection; the bare server stores nothing. With many subscribers the gateway")
        print(" writes each connection's backlog in one socket write, where broadcast() writes once per message.)")
    print(f"\nMemory per idle connection ({args.idle:,} connections, each subscribed)\n")
    print("| server | KB per connection | RSS MB with them open |\n|---|---:|---:|")
    for name in (bare_name, gw_name):
        per, total = idle[name]
        print(f"| {name} | {per:.1f} | {total:.0f} |")
    print(f"\nflowgate / bare = {idle[gw_name][0] / idle[bare_name][0]:.2f} (KB per idle connection)")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="1,100,1000")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--idle", type=int, default=5000)
    import uvloop

    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
