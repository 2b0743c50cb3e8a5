"""Failover on node loss: a 3-node NATS cluster, two gateways (FLOWGATE_STREAM_REPLICAS=3), HTTP and MQTT QoS 1
publish load and new SSE subscriptions, then SIGKILL of the node leading the message stream.

Prints, per run, how long publishes were refused (HTTP 503 or MQTT connection lost), how many new SSE
subscriptions failed while the node was down, and a timeline of answers in 0.5 s buckets, with the
nats-server version. ``--binary /usr/sbin/nats-server`` runs Debian's 2.9 as the same-run baseline.

    python bench/failover.py [--runs 2] [--binary nats-server --binary /usr/sbin/nats-server]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowgate.embedded_nats import find_nats_server, nats_server_version
from protocols.mqtt.packets import PubAck, Publish
from tests.harness import Gateway, NatsCluster, shared_keys, temp_dir
from tests.mqtt_client import RawClient


async def http_load(gw: Gateway, token: str, stop: asyncio.Event, log: list[tuple[float, str, str]]) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as h:
        while not stop.is_set():
            try:
                answer = await h.post("/api/v1/publish", json={"topic": "load", "message": "x"})
                status = str(answer.status_code)
                detail = "" if answer.status_code == 200 else answer.text[:80]
            except httpx.TransportError as exc:
                status, detail = "conn", str(exc)[:80]
            log.append((time.monotonic(), "http", status if not detail else f"{status} {detail}"))
            if status != "200":
                await asyncio.sleep(0.02)


async def mqtt_load(gw: Gateway, token: str, stop: asyncio.Event, log: list[tuple[float, str, str]]) -> None:
    client: RawClient | None = None
    packet_id = 0
    while not stop.is_set():
        try:
            if client is None:
                client, connack = await RawClient.connect(gw.mqtt_port, token, client_id="")
                if connack.return_code != 0:
                    raise ConnectionError(f"CONNACK {connack.return_code}")
            packet_id = packet_id % 65535 + 1
            await client.send(Publish("mload", b"x", 1, False, False, packet_id))
            await client.expect(PubAck, timeout=15)
            log.append((time.monotonic(), "mqtt", "200"))
        except (ConnectionError, OSError, TimeoutError, AssertionError) as exc:
            log.append((time.monotonic(), "mqtt", f"lost {type(exc).__name__}"))
            if client is not None:
                await client.close()
            client = None
            await asyncio.sleep(0.05)
    if client is not None:
        await client.close()


async def sse_attempts(gw: Gateway, token: str, stop: asyncio.Event, log: list[tuple[float, str, str]]) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as h:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with h.stream("GET", "/api/v1/subscribe", params={"topic": "load"}) as s:
                    status = str(s.status_code)
            except httpx.TransportError:
                status = "conn"
            log.append((started, "sse", status))
            await asyncio.sleep(0.1)


async def one_run(binary: str, publish_timeout: float) -> dict[str, object]:
    root = temp_dir("fg-failover-")
    nats = NatsCluster(root, binary=binary).start()
    shared = shared_keys()
    env = {
        "FLOWGATE_STREAM_REPLICAS": "3",
        "FLOWGATE_BILLING": "false",
        "FLOWGATE_PUBLISH_TIMEOUT": str(publish_timeout),
    }
    urls = [n.url for n in nats.nodes]
    gateways = [
        Gateway(",".join(order), temp_dir("fg-failover-gw-"), env=env, **shared).start(60)
        for order in (urls, list(reversed(urls)))
    ]
    try:
        _, token = gateways[0].user_token()
        log: list[tuple[float, str, str]] = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(http_load(gw, token, stop, log)) for gw in gateways for _ in range(2)]
        tasks += [asyncio.create_task(mqtt_load(gw, token, stop, log)) for gw in gateways]
        tasks += [asyncio.create_task(sse_attempts(gw, token, stop, log)) for gw in gateways]
        await asyncio.sleep(2)
        victim = nats.stream_leader("FG_MESSAGES")
        killed = time.monotonic()
        nats.nodes[victim].stop(signal.SIGKILL)
        await asyncio.sleep(14)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for gw in gateways:
            gw.stop()
            shutil.rmtree(gw.data_dir, ignore_errors=True)
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)
    after = [(t - killed, kind, status) for t, kind, status in log if t >= killed]
    result: dict[str, object] = {}
    for kind in ("http", "mqtt"):
        refused = [t for t, k, s in after if k == kind and not s.startswith("200")]
        result[f"{kind} refused s"] = max(refused) if refused else 0.0
        result[f"{kind} refusals"] = len(refused)
    sse = [s for t, k, s in after if k == "sse" and t < 10]
    result["sse failed"] = f"{sum(1 for s in sse if s != '200')}/{len(sse)}"
    buckets: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for t, kind, status in after:
        buckets[int(t * 2)][f"{kind} {status}"] += 1
    result["timeline"] = {b / 2: dict(c) for b, c in sorted(buckets.items()) if b < 24}
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--binary", action="append")
    parser.add_argument("--timeline", action="store_true")
    parser.add_argument(
        "--publish-timeout", type=float, action="append", help="FLOWGATE_PUBLISH_TIMEOUT (default 3 and 12)"
    )
    args = parser.parse_args()
    rows = []
    for name in args.binary or ["nats-server"]:
        binary = find_nats_server(name)
        assert binary is not None, name
        version = ".".join(map(str, nats_server_version(binary)))
        for timeout in args.publish_timeout or [3.0, 12.0]:
            for _ in range(args.runs):
                result = await one_run(binary, timeout)
                rows.append((f"{version} / {timeout:g}s", result))
                if args.timeline:
                    timeline = result["timeline"]
                    assert isinstance(timeline, dict)
                    for t, counts in timeline.items():
                        print(f"  {t:5.1f}s {counts}")
    print(
        f"\n{'nats / timeout':16} {'HTTP 503 window s':>18} {'HTTP refused':>13} {'MQTT lost window s':>19} "
        f"{'MQTT refused':>13} {'new SSE failed':>15}"
    )
    for version, r in rows:
        print(
            f"{version:16} {r['http refused s']:18.2f} {r['http refusals']:13} {r['mqtt refused s']:19.2f} "
            f"{r['mqtt refusals']:13} {r['sse failed']:>15}"
        )


if __name__ == "__main__":
    asyncio.run(main())
