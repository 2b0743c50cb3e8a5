"""HTTP publish throughput: the gateway against a bare uvicorn endpoint, same load, same run.

    python bench/http_publish.py [--seconds 10] [--connections 64]

Starts a real nats-server -js, the gateway and a bare raw-ASGI uvicorn app on free
ports, drives each with wrk (POST, 100-byte JSON message, keep-alive), and prints
req/s, p50/p99 latency, the gateway's RSS, and the ratio to the baseline.

The billing guard's cost: a second gateway on the same NATS runs with
``FLOWGATE_BILLING=off``; the two are measured alternately (``--rounds``) with the
same token (a plan whose limits the load never reaches, so every answer is
200) and the medians give the guard's overhead.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from tests.harness import Gateway, NatsServer, free_port, shared_keys, temp_dir

MESSAGE = {"topic": "bench", "message": "x" * 100}
UNREACHABLE = {"quota": 10**15, "rate": 10**7, "burst": 10**8, "max_connections": 10**6, "max_message_bytes": 1 << 20}


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_asgi:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}/api/v1/publish"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(url, json=MESSAGE)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("bare uvicorn did not start")


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating guard on/off runs (medians)")
    args = parser.parse_args()

    store, data, data_off = temp_dir("bench-nats-"), temp_dir("bench-gw-"), temp_dir("bench-gw-off-")
    nats = NatsServer(store).start()
    plans = data / "plans.json"
    plans.write_bytes(orjson.dumps({"plans": {"free": UNREACHABLE}}))
    shared = shared_keys("fga_bench_")
    gateway = Gateway(
        nats.url, data, env={"FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_PLANS_FILE": str(plans)}, **shared
    ).start()
    gateway_off = Gateway(
        nats.url, data_off, env={"FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_BILLING": "off"}, **shared
    )
    gateway_off.start()
    bare, bare_url = start_bare()
    try:
        _, token = gateway.user_token(app="bench")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        script = wrk.post_script("/api/v1/publish", MESSAGE, headers)
        rows = []
        for name, url, pid in (
            ("bare uvicorn raw ASGI (fixed JSON)", bare_url, bare.pid),
            ("flowgate POST /api/v1/publish (JetStream ack)", gateway.base_url + "/api/v1/publish", gateway.pid),
        ):
            wrk.run(url, script, seconds=2, connections=args.connections)  # warm-up
            result = wrk.run(url, script, seconds=args.seconds, connections=args.connections)
            rss = psutil.Process(pid).memory_info().rss / 2**20
            rows.append((name, result, rss))
        print(f"\nHTTP publish, wrk -t2 -c{args.connections} -d{args.seconds}s, 100-byte message, keep-alive\n")
        print("| variant | req/s | p50 ms | p99 ms | non-2xx | RSS MB |\n|---|---:|---:|---:|---:|---:|")
        for name, r, rss in rows:
            print(
                f"| {name} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.non_2xx} | {rss:.0f} |"
            )
        ratio = rows[1][1].requests_per_second / rows[0][1].requests_per_second
        print(f"\nflowgate / bare = {ratio:.2f} (req/s)")
        guard: dict[str, list[wrk.WrkResult]] = {"on": [], "off": []}
        cpu_us: dict[str, list[float]] = {"on": [], "off": []}  # gateway CPU per request: steadier than req/s
        targets = {"on": gateway, "off": gateway_off}
        for name in ("off", "on"):
            wrk.run(targets[name].base_url + "/api/v1/publish", script, seconds=2, connections=args.connections)
        for _ in range(args.rounds):
            for name in ("off", "on"):
                url = targets[name].base_url + "/api/v1/publish"
                before = _cpu_seconds(targets[name].pid)
                result = wrk.run(url, script, seconds=args.seconds, connections=args.connections)
                used = _cpu_seconds(targets[name].pid) - before
                guard[name].append(result)
                cpu_us[name].append(used / max(1.0, result.requests_per_second * args.seconds) * 1e6)
        print(f"\nBilling guard, {args.rounds} alternating rounds, medians\n")
        print(
            "| guard | req/s (each round) | median req/s | median p99 ms | median gateway CPU µs/request | non-2xx |\n"
            "|---|---|---:|---:|---:|---:|"
        )
        medians, cpu = {}, {}
        for name in ("off", "on"):
            runs = guard[name]
            medians[name] = statistics.median(r.requests_per_second for r in runs)
            cpu[name] = statistics.median(cpu_us[name])
            each = ", ".join(f"{r.requests_per_second:,.0f}" for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            print(
                f"| {name} | {each} | {medians[name]:,.0f} | {p99:.2f} | {cpu[name]:.0f} | {sum(r.non_2xx for r in runs)} |"
            )
        overhead = 1 - medians["on"] / medians["off"]
        print(f"\nbilling guard overhead = {overhead:.1%} of req/s (aim: under 5%)")
        print(f"billing guard overhead = {cpu['on'] / cpu['off'] - 1:.1%} of gateway CPU per request")
        rows += [(f"guard {name}", r, 0.0) for name, runs in guard.items() for r in runs]
        for name, r, _ in rows:
            if r.non_2xx or r.errors:
                print(
                    f"WARNING: {name}: {r.non_2xx} non-2xx answers and {r.errors} socket errors; the figures are not valid"
                )
    finally:
        bare.terminate()
        gateway.stop()
        gateway_off.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(data_off, ignore_errors=True)


if __name__ == "__main__":
    main()
