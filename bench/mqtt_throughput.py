"""MQTT throughput benchmark: Flow-Gate's MQTT listener against Debian's mosquitto, same tool, same run.

Measures, with the asyncio load client in ``bench/mqtt_loadclient.py`` (built on
our own codec), QoS 0 and QoS 1 end-to-end messages/s (1 publisher -> 1
subscriber, 100-byte payloads) and fan-out deliveries/s (1 -> 100 subscribers),
with p50/p99 latency and the broker's peak RSS and CPU, then prints the
Flow-Gate / mosquitto and Flow-Gate / nats-server-MQTT ratios. The brokers run
side by side and are measured alternately, scenario by scenario.

    .venv/bin/python bench/mqtt_throughput.py                     # mosquitto, nats-mqtt and the gateway
    .venv/bin/python bench/mqtt_throughput.py --brokers mosquitto  # any subset
    .venv/bin/python bench/mqtt_throughput.py --connect 127.0.0.1:1883 --username Bearer --password "$JWT"
    .venv/bin/python bench/mqtt_throughput.py --scale 0.2 --repeat 3 --json out.json
    .venv/bin/python bench/mqtt_throughput.py --protocol 5   # MQTT 5.0 load, plus a 10-member shared subscription

mosquitto is started as ``/usr/sbin/mosquitto -c <tiny config>`` on a free
127.0.0.1 port; nats-server 2.9's own MQTT listener (``mqtt { listen: ... }``,
JetStream-backed like ours) anonymous on another; the gateway with a private
``nats-server -js`` through
``tests/harness.py``, on the cores the gateway leaves as the embedded one runs
(``GOMAXPROCS`` from ``FLOWGATE_NATS_CPUS``), billing off so plan rate limits do not throttle the run,
logging in as an MQTT device does: user name ``Bearer``, password = a JWT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.mqtt_loadclient import Result, Scenario, Suite, Target, run_scenario  # noqa: E402
from flowgate.embedded_nats import child_environment, find_nats_server  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from tests.harness import Gateway, NatsServer, _drain, free_port, wait_for_line  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
# A subscriber may be up to `window` (2,000) messages behind. mosquitto drops QoS 1/2
# messages beyond max_queued_messages (default 1,000) per client and the gateway
# disconnects a subscriber beyond FLOWGATE_OUTBOUND_QUEUE (default 1,000), so both get
# a 10,000-message queue. Billing off: plan rate limits would throttle the load.
MOSQUITTO_SETTINGS = {
    "allow_anonymous": "true",
    "persistence": "false",
    "log_dest": "stderr",
    "max_queued_messages": "10000",
}
GATEWAY_ENV = {"FLOWGATE_BILLING": "false", "FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_OUTBOUND_QUEUE": "10000"}


@contextlib.contextmanager
def mosquitto() -> Iterator[Target]:
    """Debian's mosquitto on a free port, anonymous, no persistence; per-client queue as the gateway's."""
    workdir = Path(tempfile.mkdtemp(prefix="fg-mosq-"))
    port = free_port()
    config = workdir / "mosquitto.conf"
    settings = "".join(f"{name} {value}\n" for name, value in MOSQUITTO_SETTINGS.items())
    config.write_text(f"listener {port} 127.0.0.1\n{settings}")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        wait_for_line(process.stderr, "running", 15)
        _drain(process.stderr)
        yield Target("mosquitto", "127.0.0.1", port, pids=(process.pid,))
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def nats_mqtt() -> Iterator[Target]:
    """nats-server's own MQTT listener (JetStream-backed, like ours), anonymous, on free ports."""
    binary = find_nats_server("nats-server")
    if binary is None:
        raise RuntimeError("nats-server is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="fg-natsmqtt-"))
    port, mqtt_port = free_port(), free_port()
    config = workdir / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nserver_name: fg_bench_mqtt\n"
        f'jetstream {{ store_dir: "{workdir / "js"}" }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n'
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        wait_for_line(process.stderr, "Server is ready", 20)
        _drain(process.stderr)
        yield Target("nats-mqtt", "127.0.0.1", mqtt_port, pids=(process.pid,))
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def flowgate(env: dict[str, str]) -> Iterator[Target | None]:
    """The gateway (``flowgate serve``) on a private nats-server; ``None`` if it has no MQTT listener."""
    store = Path(tempfile.mkdtemp(prefix="fg-bench-nats-"))
    data = Path(tempfile.mkdtemp(prefix="fg-bench-gw-"))
    gateway_env = {**GATEWAY_ENV, **env}
    # the nats-server gets the cores the gateway leaves, as the embedded one would
    nats = NatsServer(store, env=child_environment(Settings.from_env(gateway_env), os.environ)).start()
    gateway = Gateway(nats.url, data, env=gateway_env)
    try:
        gateway.start()
        if not _listening(gateway.mqtt_port):
            yield None
            return
        _, token = gateway.user_token(app="bench", ttl=3600)
        assert nats.process is not None
        yield Target(
            "flow-gate", "127.0.0.1", gateway.mqtt_port, "Bearer", token.encode(), (gateway.pid, nats.process.pid)
        )
    except BaseException:
        print("gateway log (last 30 lines):\n" + "".join(gateway.log[-30:]), file=sys.stderr)
        raise
    finally:
        gateway.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


async def measure(targets: list[Target], scenarios: tuple[Scenario, ...], repeat: int) -> list[Result]:
    """Each scenario ``repeat`` times on every target, the targets alternating; the median-rate run is kept."""
    runs: dict[tuple[str, str], list[Result]] = {}
    for scenario in scenarios:
        for _ in range(repeat):
            for target in targets:
                result = await run_scenario(target, scenario)
                stall = "  STALLED (broker stopped reading or delivering)" if result.stalled else ""
                print(
                    f"  {target.name:10} {scenario.name:7} {result.rate:>12,.0f}/s  p99 {result.p99_ms:7.2f} ms"
                    f"  lost {result.lost}{stall}",
                    file=sys.stderr,
                )
                runs.setdefault((target.name, scenario.name), []).append(result)
    kept = []
    for target in targets:
        for scenario in scenarios:
            ordered = sorted(runs[(target.name, scenario.name)], key=lambda r: r.rate)
            kept.append(ordered[len(ordered) // 2])
    return kept


def run_async(coro: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        return asyncio.run(coro)
    return uvloop.run(coro)


def table(results: list[Result]) -> str:
    lines = [
        f"{'scenario':18} {'broker':10} {'rate/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'order':>5} "
        f"{'RSS MB':>7} {'+NATS MB':>8} {'CPU':>5} {'+NATS':>6} {'tool CPU':>8}",
    ]
    for r in results:
        labels = {
            "qos0": "QoS 0 1->1 msg",
            "qos1": "QoS 1 1->1 msg",
            "qos1-5k": "QoS 1 @5k/s msg",
            "shared10": "QoS 1 $share x10 msg",
        }
        label = labels.get(r.scenario, f"fan-out 1->{r.subscribers} dlv")
        nats_rss = f"{r.other_rss_mb:8.1f}" if r.other_rss_mb else f"{'-':>8}"
        nats_cpu = f"{r.other_cpu:5.0f}%" if r.other_rss_mb else f"{'-':>6}"
        lines.append(
            f"{label:18} {r.target:10} {r.rate:11,.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.lost:5d} {r.out_of_order:5d} "
            f"{r.broker_rss_mb:7.1f} {nats_rss} {r.broker_cpu:4.0f}% {nats_cpu} {r.tool_cpu:7.0f}%"
            + ("  STALLED" if r.stalled else "")
        )
    by = {(r.target, r.scenario): r for r in results}
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    names = list(dict.fromkeys(r.target for r in results))
    for baseline in [n for n in names if n != "flow-gate"] if "flow-gate" in names else []:
        lines += [
            "",
            f"{'flow-gate / ' + baseline:22} {baseline + '/s':>11} {'flow-gate/s':>11} {'ratio':>6}"
            f" {'p50 ms base/fg':>15} {'p99 ms base/fg':>15}",
        ]
        for name in scenarios:
            m, g = by.get((baseline, name)), by.get(("flow-gate", name))
            if m and g:
                lines.append(
                    f"{name:22} {m.rate:11,.0f} {g.rate:11,.0f} {g.rate / m.rate:6.2f}"
                    f" {m.p50_ms:7.2f}/{g.p50_ms:<7.2f} {m.p99_ms:7.2f}/{g.p99_ms:<7.2f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--brokers", default="mosquitto,nats-mqtt,flow-gate", help="comma-separated: mosquitto, nats-mqtt, flow-gate"
    )
    parser.add_argument("--connect", metavar="HOST:PORT", help="measure this already running broker instead")
    parser.add_argument("--username", help="with --connect: user name (e.g. Bearer)")
    parser.add_argument("--password", help="with --connect: password (e.g. a JWT)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the message counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median is reported")
    parser.add_argument("--only", help="comma-separated scenarios: qos0, qos1, fanout, qos1-5k, shared10")
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(4, 5),
        default=4,
        help="MQTT protocol level of the load: 4 (3.1.1) or 5 (MQTT 5.0; nats-mqtt has none; adds shared10)",
    )
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway setting"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    scenarios = Suite(scale=args.scale).build()
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = tuple(s for s in scenarios if s.name in wanted)
    elif args.protocol == 4:
        scenarios = tuple(s for s in scenarios if not s.shared)  # nats-mqtt has no shared subscriptions
    level = args.protocol
    results: list[Result] = []
    notes: list[str] = []
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        password = args.password.encode() if args.password is not None else None
        target = Target(host or "127.0.0.1", host or "127.0.0.1", int(port), args.username, password, protocol=level)
        results += run_async(measure([target], scenarios, args.repeat))
    else:
        brokers = args.brokers.split(",")
        with contextlib.ExitStack() as stack:  # all brokers up at once, measured alternately
            targets = []
            if "mosquitto" in brokers:
                targets.append(replace(stack.enter_context(mosquitto()), protocol=level))
            if "nats-mqtt" in brokers and level == 5:
                notes.append("nats-mqtt: nats-server's MQTT listener speaks 3.1.1 only; not measured in MQTT 5")
            elif "nats-mqtt" in brokers:
                targets.append(stack.enter_context(nats_mqtt()))
            if "flow-gate" in brokers or "gateway" in brokers:
                env = dict(item.split("=", 1) for item in args.gateway_env)
                gw_target = stack.enter_context(flowgate(env))
                if gw_target is None:
                    notes.append("flow-gate: the gateway has no MQTT listener on FLOWGATE_MQTT_PORT yet; not measured")
                else:
                    targets.append(replace(gw_target, protocol=level))
            if targets:
                results += run_async(measure(targets, scenarios, args.repeat))

    print(
        f"MQTT {'5.0' if level == 5 else '3.1.1'}, {scenarios[0].payload_size}-byte payloads, closed-loop publisher; brokers alternating, median of {args.repeat}"
    )
    if not args.connect and "mosquitto" in args.brokers:
        print("mosquitto: " + ", ".join(f"{k} {v}" for k, v in MOSQUITTO_SETTINGS.items() if k != "log_dest"))
    if not args.connect and "nats-mqtt" in args.brokers:
        print("nats-mqtt: nats-server's mqtt { } listener, JetStream file store, default settings, anonymous")
    if not args.connect and any(b in args.brokers for b in ("flow-gate", "gateway")):
        gw_env = {**GATEWAY_ENV, **dict(item.split("=", 1) for item in args.gateway_env)}
        print(
            "flow-gate: " + " ".join(f"{k}={v}" for k, v in gw_env.items()) + "; CPU/RSS: gateway, +NATS: nats-server"
        )
    print(table(results))
    for note in notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"rate": r.rate} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
