"""Connection events and presence across SSE, WebSocket and MQTT clients on two replicas, one killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tests.harness import Gateway, replicas_on_own_nats
from tests.mqtt_client import RawClient
from tests.sse_client import reader

ENV = {
    "FLOWGATE_PRESENCE_HEARTBEAT": "0.3",
    "FLOWGATE_MQTT_INFLIGHT": "1",  # with a short backlog: an MQTT client that stops acknowledging is slow soon
    "FLOWGATE_OUTBOUND_QUEUE": "20",
}


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Gateway]]:
    with replicas_on_own_nats("fg-ev-", ENV) as gateways:
        yield gateways


class Watcher:
    """An SSE stream on reserved topics, collecting event messages."""

    def __init__(self, stream: httpx.Response) -> None:
        self.events = reader(stream)
        self.seen: list[dict[str, Any]] = []

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        for event in self.seen:
            if predicate(event):
                return event
        async with asyncio.timeout(timeout):
            async for sse in self.events:
                if sse.event != "message":
                    continue
                event = {**sse.json()["data"], "_topic": sse.json()["topic"]}
                self.seen.append(event)
                if predicate(event):
                    return event
        raise AssertionError("stream ended")


@asynccontextmanager
async def watch(gw: Gateway, token: str, *topics: str) -> AsyncIterator[Watcher]:
    params: list[tuple[str, str | int | float | bool | None]] = [("topic", t) for t in topics]
    params.append(("token", token))
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
        async with http.stream("GET", "/api/v1/subscribe", params=params) as stream:
            assert stream.status_code == 200
            yield Watcher(stream)


@asynccontextmanager
async def mosquitto_sub(
    gw: Gateway, token: str, client_id: str, topic: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``mosquitto_sub``, subscribed (SUBACK seen) until the block ends."""
    process = await asyncio.create_subprocess_exec(
        "stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(gw.mqtt_port), "-u", "Bearer", "-P", token,
        "-i", client_id, "-t", topic, "-d", "-V", "mqttv311",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stdout = process.stdout
    assert stdout is not None

    async def drain() -> None:  # its debug output must never fill the pipe
        while await stdout.readline():
            pass

    draining: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(10):
            while b"SUBACK" not in await stdout.readline():
                pass
        draining = asyncio.create_task(drain())
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if draining is not None:
            draining.cancel()


async def presence(gw: Gateway, token: str, topic: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(
            gw.base_url + "/api/v1/presence", params={"topic": topic}, headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["clients"])


async def ws_subscribe(ws: Any, topic: str, frame_id: int) -> None:
    await ws.send(orjson.dumps({"action": "subscribe", "topic": topic, "id": frame_id}).decode())
    async with asyncio.timeout(10):
        while (answer := orjson.loads(await ws.recv())).get("id") != frame_id:
            pass
    assert answer["action"] == "ack", answer


async def test_events_of_websocket_and_mqtt_clients_reach_an_sse_watcher(replicas: list[Gateway]) -> None:
    a, b = replicas
    _, key = a.new_user()
    token = a.token(key)
    limited = a.token(key, permissions={"subscribe": {"allow": ["room/#"]}})
    async with watch(a, token, "$events/#") as watcher:
        info = orjson.dumps({"name": "alice"}).decode()
        async with websockets.connect(f"{b.ws_url}/ws?token={token}&info={info}") as ws:
            connected = await watcher.until(lambda e: e["event"] == "connected" and e["protocol"] == "ws")
            assert connected["info"] == {"name": "alice"} and connected["_topic"] == "$events/connected"
            client_id = connected["client_id"]
            await ws_subscribe(ws, "room/1", 1)
            await watcher.until(lambda e: e["event"] == "subscribed" and e["client_id"] == client_id)
            await ws.send(orjson.dumps({"action": "unsubscribe", "topic": "room/1", "id": 2}).decode())
            gone = await watcher.until(lambda e: e["event"] == "unsubscribed" and e["client_id"] == client_id)
            assert gone["filters"] == ["room/1"]
        left = await watcher.until(lambda e: e["event"] == "disconnected" and e["client_id"] == client_id)
        assert left["reason"] == "client closed"
        async with mosquitto_sub(a, token, "dev-1", "room/1"):
            await watcher.until(lambda e: e["event"] == "connected" and e["client_id"] == "dev-1")
            subscribed = await watcher.until(lambda e: e["event"] == "subscribed" and e["client_id"] == "dev-1")
            assert subscribed["filters"] == ["room/1"] and subscribed["protocol"] == "mqtt"
        await watcher.until(lambda e: e["event"] == "disconnected" and e["client_id"] == "dev-1")
        async with websockets.connect(f"{b.ws_url}/ws?token={limited}") as ws:  # refusals are auth failures
            await ws.send(orjson.dumps({"action": "subscribe", "topic": "secret", "id": 1}).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "error"
            refused = await watcher.until(lambda e: e["event"] == "auth-failure" and e["protocol"] == "ws")
            assert "secret" in refused["reason"]
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(a.base_url + "/api/v1/subscribe", params={"topic": "secret", "token": limited})
            assert answer.status_code == 403
        await watcher.until(lambda e: e["event"] == "auth-failure" and e["protocol"] == "sse")
    async with httpx.AsyncClient(timeout=10) as http:  # nobody may forge an event
        forged = await http.post(
            a.base_url + "/api/v1/publish",
            json={"topic": "$events/connected", "message": {}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert forged.status_code == 403


async def test_a_slow_consumer_is_reported(replicas: list[Gateway]) -> None:
    a, b = replicas
    _, token = a.user_token()
    async with watch(a, token, "$events/#") as watcher:
        stuck, _ = await RawClient.connect(b.mqtt_port, token, client_id="stuck")
        try:
            await stuck.subscribe(("flood", 1))  # then acknowledges nothing
            async with httpx.AsyncClient(base_url=a.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
                for n in range(30):
                    assert (
                        await http.post("/api/v1/publish", json={"topic": "flood", "message": n})
                    ).status_code == 200
            slow = await watcher.until(lambda e: e["event"] == "slow-consumer" and e["client_id"] == "stuck")
            assert slow["reason"].startswith("slow consumer") and slow["protocol"] == "mqtt"
            gone = await watcher.until(lambda e: e["event"] == "disconnected" and e["client_id"] == "stuck")
            assert gone["reason"] == slow["reason"]
        finally:
            await stuck.close()


async def test_presence_across_replicas_and_protocols_and_a_killed_replica(replicas: list[Gateway]) -> None:
    a, b = replicas
    _, token = a.user_token()
    async with watch(a, token, "$presence/room/2", "$events/disconnected") as watcher:
        info = orjson.dumps({"seat": 4}).decode()
        async with (
            websockets.connect(f"{a.ws_url}/ws?token={token}&info={info}") as ws,
            mosquitto_sub(b, token, "dev-2", "room/+"),
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", b.base_url + "/api/v1/subscribe", params={"topic": "room/2", "token": token}) as sse,
        ):
            assert sse.status_code == 200
            await ws_subscribe(ws, "room/2", 1)
            join = await watcher.until(lambda e: e["event"] == "join" and e["protocol"] == "ws")
            assert join["topic"] == "room/2" and join["info"] == {"seat": 4}
            await watcher.until(lambda e: e["event"] == "join" and e["protocol"] == "sse")
            for gw in (a, b):  # the same answer on either replica
                for _ in range(100):
                    clients = await presence(gw, token, "room/2")
                    if len(clients) == 3:
                        break
                    await asyncio.sleep(0.05)  # presence entries are written just after the events
                assert sorted(c["protocol"] for c in clients) == ["mqtt", "sse", "ws"], clients
                assert next(c for c in clients if c["protocol"] == "mqtt")["client_id"] == "dev-2"
                assert next(c for c in clients if c["protocol"] == "ws")["info"] == {"seat": 4}
            assert await presence(a, token, "room/3") == [
                c for c in clients if c["protocol"] == "mqtt"
            ]  # room/+ matches
            b.stop(signal.SIGKILL)  # its MQTT and SSE clients vanish without a word (the module's last test)
            lost = await watcher.until(lambda e: e.get("reason") == "replica lost" and e["protocol"] == "mqtt")
            assert lost["client_id"] == "dev-2"
            await watcher.until(lambda e: e["event"] == "leave" and e["protocol"] == "sse")
            remaining = await presence(a, token, "room/2")
            assert [c["protocol"] for c in remaining] == ["ws"]
