"""MQTT over TLS against plain MQTT, Flow-Gate beside mosquitto's TLS listener, same tool, same run.

The load client of ``bench/mqtt_loadclient.py`` measures QoS 0 and QoS 1
end-to-end messages/s (1 publisher -> 1 subscriber, 100-byte payloads, p50/p99)
on four targets side by side, alternately: mosquitto's plain and TLS listeners
(one process) and the gateway's ``FLOWGATE_MQTT_PORT`` and ``FLOWGATE_MQTTS_PORT``
(one process, on a private ``nats-server -js``). Certificates (an ECDSA P-256 CA
and server certificate) are made for the run with ``cryptography``; both
brokers negotiate TLS 1.3 with the same client. The table gives each broker's
TLS / plain ratio (what TLS costs it) and Flow-Gate / mosquitto over TLS.

    .venv/bin/python bench/tls_throughput.py
    .venv/bin/python bench/tls_throughput.py --scale 0.5 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.mqtt_loadclient import Result, Suite, Target  # noqa: E402
from bench.mqtt_throughput import GATEWAY_ENV, MOSQUITTO, MOSQUITTO_SETTINGS, measure, run_async  # noqa: E402
from tests.harness import Gateway, NatsServer, _drain, free_port, wait_for_line  # noqa: E402
from tests.tls_certs import CertificateAuthority, Issued  # noqa: E402


@contextlib.contextmanager
def certificates() -> Iterator[tuple[CertificateAuthority, Issued]]:
    directory = Path(tempfile.mkdtemp(prefix="fg-bench-tls-"))
    directory.chmod(0o755)  # mosquitto started as root reads its files as the mosquitto user
    try:
        ca = CertificateAuthority(directory)
        server = ca.issue("server", server=True)
        server.key.chmod(0o644)
        yield ca, server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def mosquitto(server: Issued, client: ssl.SSLContext) -> Iterator[tuple[Target, Target]]:
    """One mosquitto with a plain and a TLS listener."""
    workdir = Path(tempfile.mkdtemp(prefix="fg-mosq-"))
    plain, tls = free_port(), free_port()
    settings = "".join(f"{name} {value}\n" for name, value in MOSQUITTO_SETTINGS.items())
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"{settings}listener {plain} 127.0.0.1\n"
        f"listener {tls} 127.0.0.1\ncertfile {server.cert}\nkeyfile {server.key}\ntls_version tlsv1.2\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        wait_for_line(process.stderr, "running", 15)
        _drain(process.stderr)
        pids = (process.pid,)
        yield (
            Target("mosquitto", "127.0.0.1", plain, pids=pids),
            Target("mosquitto+tls", "127.0.0.1", tls, pids=pids, tls=client),
        )
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def flowgate(server: Issued, client: ssl.SSLContext) -> Iterator[tuple[Target, Target]]:
    """The gateway with its plain and TLS MQTT listeners, on a private nats-server."""
    store = Path(tempfile.mkdtemp(prefix="fg-bench-nats-"))
    data = Path(tempfile.mkdtemp(prefix="fg-bench-gw-"))
    nats = NatsServer(store).start()
    mqtts = free_port()
    env = {
        **GATEWAY_ENV,
        "FLOWGATE_MQTTS_PORT": str(mqtts),
        "FLOWGATE_HTTPS_PORT": "-1",
        "FLOWGATE_TLS_CERT_FILE": str(server.cert),
        "FLOWGATE_TLS_KEY_FILE": str(server.key),
    }
    gateway = Gateway(nats.url, data, env=env)
    try:
        gateway.start()
        _, token = gateway.user_token(app="bench", ttl=3600)
        assert nats.process is not None
        pids = (gateway.pid, nats.process.pid)
        yield (
            Target("flow-gate", "127.0.0.1", gateway.mqtt_port, "Bearer", token.encode(), pids),
            Target("flow-gate+tls", "127.0.0.1", mqtts, "Bearer", token.encode(), pids, tls=client),
        )
    except BaseException:
        print("gateway log (last 30 lines):\n" + "".join(gateway.log[-30:]), file=sys.stderr)
        raise
    finally:
        gateway.stop()
        nats.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


def table(results: list[Result]) -> str:
    lines = [f"{'scenario':16} {'broker':14} {'rate/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'CPU':>5}"]
    for r in results:
        lines.append(
            f"{r.scenario:16} {r.target:14} {r.rate:11,.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.lost:5d} {r.broker_cpu:4.0f}%"
            + ("  STALLED" if r.stalled else "")
        )
    by = {(r.target, r.scenario): r for r in results}
    lines += ["", f"{'scenario':16} {'comparison':32} {'ratio':>6}"]
    for scenario in dict.fromkeys(r.scenario for r in results):
        for label, over, under in (
            ("mosquitto: TLS / plain", "mosquitto+tls", "mosquitto"),
            ("flow-gate: TLS / plain", "flow-gate+tls", "flow-gate"),
            ("TLS: flow-gate / mosquitto", "flow-gate+tls", "mosquitto+tls"),
            ("plain: flow-gate / mosquitto", "flow-gate", "mosquitto"),
        ):
            a, b = by.get((over, scenario)), by.get((under, scenario))
            if a and b and b.rate:
                lines.append(f"{scenario:16} {label:32} {a.rate / b.rate:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=0.5, help="multiply the message counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median is reported")
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in Suite(scale=args.scale).build() if s.name in ("qos0", "qos1"))
    with certificates() as (ca, server), contextlib.ExitStack() as stack:
        client = ssl.create_default_context(cafile=ca.path)
        targets = [*stack.enter_context(mosquitto(server, client)), *stack.enter_context(flowgate(server, client))]
        results = run_async(measure(targets, scenarios, args.repeat))
    print(
        f"MQTT 3.1.1 over TLS 1.3 (ECDSA P-256) and plain, {scenarios[0].payload_size}-byte payloads, "
        f"closed-loop publisher, 1 -> 1; targets alternating, median of {args.repeat}"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
