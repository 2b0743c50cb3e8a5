"""Scaling with workers: HTTP publish and MQTT QoS 1 publish throughput with 1 and 2 workers, same run.

    python bench/scaling.py [--seconds 8] [--connections 64] [--mqtt-connections 8]

One nats-server -js; for each worker count, ``flowgate serve`` with ``FLOWGATE_WORKERS=N`` on it
(the supervisor, N workers on the same ports), then:
- HTTP: wrk, POST /api/v1/publish (100-byte message, keep-alive, every answer after JetStream's ack);
- MQTT: this process opens ``--mqtt-connections`` connections (spread over the workers by the kernel)
  that each keep 64 QoS 1 PUBLISHes in flight and count PUBACKs.
For each it prints the rate and the CPU each process used (gateway workers, NATS, the load generator),
the gateway's CPU per message, and the ratio of 2 workers to 1. On a host with free cores the
gateway's capacity is about cores / (CPU seconds per message); this machine has 2 cores shared by
the load generator, NATS and the workers, so the ratio here is a floor, not the scaling limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from protocols.mqtt.codec import Decoder, encode, encode_publish
from protocols.mqtt.packets import ConnAck, Connect, PubAck
from tests.harness import Gateway, NatsServer, shared_keys, temp_dir

MESSAGE = {"topic": "bench", "message": "x" * 100}
UNREACHABLE = {"quota": 10**15, "rate": 10**7, "burst": 10**8, "max_connections": 10**6, "max_message_bytes": 1 << 20}
MQTT_WINDOW = 64


@dataclass
class Usage:
    """CPU seconds of the gateway's workers, NATS and the load generator over one measurement."""

    workers: list[float]
    nats: float
    load: float
    seconds: float

    def percent(self, value: float) -> float:
        return 100 * value / self.seconds


class CpuMeter:
    def __init__(self, gateway: Gateway, nats: NatsServer) -> None:
        self.workers = worker_processes(gateway)
        assert nats.process is not None
        self.nats = psutil.Process(nats.process.pid)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _load() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it exited
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __enter__(self) -> CpuMeter:
        self._start = time.monotonic()
        self._before = ([self._cpu(w) for w in self.workers], self._cpu(self.nats), self._load())
        return self

    def __exit__(self, *_: object) -> None:
        workers, nats, load = self._before
        self.usage = Usage(
            [self._cpu(w) - b for w, b in zip(self.workers, workers, strict=True)],
            self._cpu(self.nats) - nats,
            self._load() - load,
            time.monotonic() - self._start,
        )


async def mqtt_publishers(port: int, token: str, connections: int, seconds: float) -> int:
    """QoS 1 PUBLISHes acknowledged in ``seconds`` by ``connections`` pipelined publishers."""
    acked = 0
    stop = time.monotonic() + seconds

    async def publisher(index: int) -> None:
        nonlocal acked
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode(Connect(f"scale-{index}", True, 60, "Bearer", token.encode(), None)))
        decoder = Decoder(1 << 20, server_side=False)
        connack = None
        while connack is None:
            decoder.feed(await reader.read(65536))
            connack = decoder.next_packet()
        assert isinstance(connack, ConnAck) and connack.return_code == 0, connack
        body = b"x" * 100
        next_id = 0

        def send(count: int) -> None:
            nonlocal next_id
            frames = []
            for _ in range(count):
                next_id = next_id % 65535 + 1
                frames.append(encode_publish(f"bench/{index}", body, 1, False, False, next_id))
            writer.write(b"".join(frames))

        send(MQTT_WINDOW)
        while time.monotonic() < stop:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed by the gateway")
            decoder.feed(data)
            done = 0
            while (packet := decoder.next_packet()) is not None:
                if isinstance(packet, PubAck):
                    done += 1
            acked += done
            send(done)
        writer.close()

    await asyncio.gather(*(publisher(i) for i in range(connections)))
    return acked


def worker_processes(gateway: Gateway) -> list[psutil.Process]:
    """The supervisor's workers, or the gateway process itself when it runs without workers."""
    process = psutil.Process(gateway.pid)
    return [p for p in process.children() if "nats-server" not in p.name()] or [process]


def both_listening(gateway: Gateway, workers: int) -> bool:
    children = worker_processes(gateway)
    ports = {gateway.http_port, gateway.mqtt_port}
    return len(children) == workers and all(
        ports <= {c.laddr.port for c in w.net_connections("tcp") if c.status == psutil.CONN_LISTEN} for w in children
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--mqtt-connections", type=int, default=8)
    args = parser.parse_args()
    store = temp_dir("bench-scale-nats-")
    nats = NatsServer(store).start()
    shared = shared_keys("fga_bench_")
    rows = []
    try:
        for workers in (1, 2):
            data = temp_dir("bench-scale-gw-")
            plans = data / "plans.json"
            plans.write_bytes(orjson.dumps({"plans": {"free": UNREACHABLE}}))
            env = {"FLOWGATE_WORKERS": str(workers), "FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_PLANS_FILE": str(plans)}
            gateway = Gateway(nats.url, data, env=env, **shared).start(60)
            try:
                deadline = time.monotonic() + 60
                while not both_listening(gateway, workers):
                    if time.monotonic() > deadline:
                        raise TimeoutError("workers not listening")
                    time.sleep(0.1)
                _, token = gateway.user_token(app="bench")
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
                script = wrk.post_script("/api/v1/publish", MESSAGE, headers)
                url = gateway.base_url + "/api/v1/publish"
                wrk.run(url, script, seconds=2, connections=args.connections)  # warm-up
                with CpuMeter(gateway, nats) as http_cpu:
                    http = wrk.run(url, script, seconds=args.seconds, connections=args.connections)
                asyncio.run(mqtt_publishers(gateway.mqtt_port, token, args.mqtt_connections, 2))  # warm-up
                with CpuMeter(gateway, nats) as mqtt_cpu:
                    acked = asyncio.run(mqtt_publishers(gateway.mqtt_port, token, args.mqtt_connections, args.seconds))
                rows.append((workers, http, http_cpu.usage, acked / mqtt_cpu.usage.seconds, mqtt_cpu.usage))
            finally:
                gateway.stop()
                shutil.rmtree(data, ignore_errors=True)
    finally:
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)

    print(
        f"\nScaling with workers on {os.cpu_count()} CPUs, {args.seconds} s each, nats-server from find_nats_server\n"
    )
    print(
        "| workers | load | msg/s | p99 ms | gateway CPU % (per worker) | gateway CPU µs/msg | NATS CPU % | load generator CPU % |\n"
        "|---:|---|---:|---:|---|---:|---:|---:|"
    )
    rates: dict[tuple[int, str], float] = {}
    for workers, http, http_usage, mqtt_rate, mqtt_usage in rows:
        for name, rate, p99, usage in (
            ("HTTP publish", http.requests_per_second, f"{http.p99_ms:.1f}", http_usage),
            (f"MQTT QoS 1, {args.mqtt_connections} conns", mqtt_rate, "", mqtt_usage),
        ):
            rates[(workers, name.split(",")[0])] = rate
            per_worker = " + ".join(f"{usage.percent(w):.0f}" for w in usage.workers)
            us = sum(usage.workers) / max(1.0, rate * usage.seconds) * 1e6
            print(
                f"| {workers} | {name} | {rate:,.0f} | {p99} | {per_worker} | {us:.0f} | "
                f"{usage.percent(usage.nats):.0f} | {usage.percent(usage.load):.0f} |"
            )
    costs: dict[str, list[tuple[float, float]]] = {}  # load -> (gateway, NATS) CPU µs per message
    for _, http, http_usage, mqtt_rate, mqtt_usage in rows:
        for load, rate, usage in (
            ("HTTP publish", http.requests_per_second, http_usage),
            ("MQTT QoS 1", mqtt_rate, mqtt_usage),
        ):
            count = max(1.0, rate * usage.seconds)
            costs.setdefault(load, []).append((sum(usage.workers) / count * 1e6, usage.nats / count * 1e6))
    for load in ("HTTP publish", "MQTT QoS 1"):
        gateway_us = min(g for g, _ in costs[load])
        nats_us = min(n for _, n in costs[load])
        print(
            f"\n{load}: 2 workers / 1 worker = {rates[(2, load)] / rates[(1, load)]:.2f}; on paper, one core of "
            f"workers takes {1e6 / gateway_us:,.0f} msg/s ({gateway_us:.0f} µs each) and one core of NATS "
            f"{1e6 / nats_us:,.0f} msg/s ({nats_us:.0f} µs each): an N-core host with N-1 workers and NATS on one "
            f"core reaches about min((N-1) x {1e6 / gateway_us:,.0f}, {1e6 / nats_us:,.0f}) msg/s"
        )


if __name__ == "__main__":
    main()
