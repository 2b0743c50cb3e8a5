"""Revocation that bites, on two replicas sharing one NATS: disable, delete, key deletion and token revocation.

For each change, a user holds live connections on both replicas (an SSE
stream, a WebSocket, a paho MQTT session) and publishes over HTTP and to a
queue on both. After the change, made on one replica, within one second on
both: the SSE stream ends with an ``event: revoked``, the WebSocket closes with
4401/4403, the MQTT connection is dropped, and the next HTTP publish, queue
send, SSE request, WebSocket and MQTT CONNECT (``mosquitto_pub``) are refused
with the change's status and reason; nothing the user sends is stored.
Enabling a disabled user restores access at once.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import orjson
import paho.mqtt.client as paho
import pytest
import websockets
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from websockets.asyncio.client import ClientConnection

from tests.harness import Gateway, NatsServer, shared_keys, temp_dir
from tests.sse_client import Event, reader

WITHIN = 1.0  # seconds: the bound, from the change's answer to each observation


@pytest.fixture(scope="module")
def replicas(nats_server: NatsServer) -> Iterator[tuple[Gateway, Gateway]]:
    shared = shared_keys()
    dirs = [temp_dir("fg-revoke-"), temp_dir("fg-revoke-")]
    gateways = [Gateway(nats_server.url, d, **shared) for d in dirs]
    try:
        for gw in gateways:
            gw.start()
        yield gateways[0], gateways[1]
    finally:
        for gw in gateways:
            gw.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class Change:
    name: str
    status: int
    reason: str
    ws_code: int
    mqtt_refusal: str  # what mosquitto_pub says about the CONNACK
    on_b: bool = False  # made on the second replica (else the first)


CHANGES = [
    Change("disable", 403, "user_disabled", 4403, "not authorised"),
    Change("delete", 401, "user_deleted", 4401, "bad user name or password"),
    Change("delete_key", 401, "key_revoked", 4401, "bad user name or password"),
    Change("admin_revoke_all", 401, "token_revoked", 4401, "bad user name or password"),
    Change("user_revokes_own", 401, "token_revoked", 4401, "bad user name or password", on_b=True),
]


class Mqtt:
    """A paho-mqtt 3.1.1 client on its own network thread; ``dropped`` is set when the server cuts it."""

    def __init__(self, port: int, token: str) -> None:
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="rv-" + secrets.token_hex(4), protocol=paho.MQTTv311
        )
        self.client.username_pw_set("Bearer", token)
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)  # no reconnection within the test
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, _c: paho.Client, _u: Any, _f: paho.ConnectFlags, rc: ReasonCode, _p: Any) -> None:
        if not rc.is_failure:
            self.connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Session:
    """One user's credentials and live connections on both replicas."""

    user_id: str
    key: str
    token: str
    http: list[httpx.AsyncClient]
    sse: list[httpx.Response] = field(default_factory=list)
    ws: list[ClientConnection] = field(default_factory=list)
    mqtt: list[Mqtt] = field(default_factory=list)
    published: int = 0

    async def publish(self, side: int) -> httpx.Response:
        return await self.http[side].post("/api/v1/publish", json={"topic": "t", "message": "m"})

    async def send_to_queue(self, side: int) -> httpx.Response:
        return await self.http[side].post("/api/v1/queues/jobs/messages", json={"body": "job"})


async def open_session(a: Gateway, b: Gateway, stack: list[Any]) -> Session:
    user_id, key = a.new_user()
    token = a.token(key)
    http = [httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) for gw in (a, b)]
    stack.extend(http)
    session = Session(user_id, key, token, http)
    for side, gw in enumerate((a, b)):
        assert (await session.publish(side)).status_code == 200
        assert (await session.send_to_queue(side)).status_code == 200
        session.published += 1
        sse = await http[side].send(
            http[side].build_request("GET", "/api/v1/subscribe", params={"topic": "t"}), stream=True
        )
        assert sse.status_code == 200
        stack.append(sse)
        session.sse.append(sse)
        ws = await websockets.connect(f"{gw.ws_url}/ws?token={token}")
        stack.append(ws)
        await ws.send(orjson.dumps({"action": "publish", "topic": "t", "message": "w", "id": 1}).decode())
        assert orjson.loads(await ws.recv())["action"] == "ack"  # the connection is fully set up
        session.published += 1
        session.ws.append(ws)
        mqtt = Mqtt(gw.mqtt_port, token)
        stack.append(mqtt)
        assert await asyncio.to_thread(mqtt.connected.wait, 10)
        session.mqtt.append(mqtt)
    return session


async def make_change(change: Change, gw: Gateway, session: Session) -> None:
    admin = {"Authorization": f"Bearer {gw.admin_key}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=admin) as http:
        user = f"/api/v1/admin/users/{session.user_id}"
        if change.name == "disable":
            answer = await http.patch(user, json={"disabled": True})
        elif change.name == "delete":
            answer = await http.delete(user)
        elif change.name == "delete_key":
            answer = await http.delete(f"{user}/keys/{session.key.split('_')[1]}")
        elif change.name == "admin_revoke_all":
            answer = await http.post(f"{user}/revoke-tokens")
        else:
            own = {"Authorization": f"Bearer {session.token}"}
            answer = await http.post("/api/v1/tokens/revoke", headers=own)
    assert answer.status_code in (200, 204), answer.text


def assert_refusal(answer: httpx.Response, change: Change) -> None:
    assert answer.status_code == change.status, answer.text
    error = answer.json()["error"]
    assert error["reason"] == change.reason and error["message"]


async def refused_within(request: Any, change: Change, deadline: float) -> int:
    """Repeat ``request`` until it is refused as ``change`` says (by ``deadline``); how many got through first."""
    through = 0
    while True:
        answer = await request()
        if answer.status_code != 200:
            assert_refusal(answer, change)
            return through
        through += 1
        assert time.monotonic() < deadline, "still accepted after a second"


async def sse_ended(response: httpx.Response) -> Event:
    last: Event | None = None
    async for event in reader(response):
        last = event
    assert last is not None and last.event == "revoked"
    return last


async def stored_messages(url: str, user_id: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("FG_MESSAGES", subjects_filter=f"fg.msg.{user_id}.*.t")
        return sum((info.state.subjects or {}).values())  # topic t only: connection events are stored beside it
    finally:
        await nc.close()


async def mosquitto_pub(gw: Gateway, token: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(gw.mqtt_port), "-u", "Bearer", "-P", token,
        "-t", "t", "-m", "late", "-q", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 10)
    return process.returncode or 0, output.decode()


async def close_all(stack: list[Any]) -> None:
    for item in reversed(stack):
        if isinstance(item, Mqtt):
            await asyncio.to_thread(item.close)
        elif isinstance(item, httpx.Response | httpx.AsyncClient):
            await item.aclose()
        else:
            await item.close()


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
async def test_change_cuts_live_connections_and_refuses_requests_on_both_replicas(
    replicas: tuple[Gateway, Gateway], nats_server: NatsServer, change: Change
) -> None:
    a, b = replicas
    stack: list[Any] = []
    try:
        session = await open_session(a, b, stack)
        await make_change(change, b if change.on_b else a, session)
        deadline = time.monotonic() + WITHIN
        async with asyncio.timeout(WITHIN):
            ended = await asyncio.gather(*(sse_ended(r) for r in session.sse))
            await asyncio.gather(*(ws.wait_closed() for ws in session.ws))
            dropped = await asyncio.gather(*(asyncio.to_thread(m.dropped.wait, WITHIN) for m in session.mqtt))
            late = await asyncio.gather(
                *(refused_within(lambda side=side: session.publish(side), change, deadline) for side in (0, 1)),
                *(refused_within(lambda side=side: session.send_to_queue(side), change, deadline) for side in (0, 1)),
            )
        assert [e.json()["reason"] for e in ended] == [change.reason] * 2
        assert [(ws.close_code, ws.close_reason) for ws in session.ws] == [
            (change.ws_code, ended[0].json()["message"])
        ] * 2
        assert dropped == [True, True]
        # the changing replica refuses the very next request; the other one learnt it as fast (late == 0 in practice)
        changer = 1 if change.on_b else 0
        assert late[changer] == late[2 + changer] == 0
        # new connections are refused too, in each protocol's terms
        for side, gw in enumerate((a, b)):
            assert_refusal(await session.http[side].get("/api/v1/subscribe", params={"topic": "t"}), change)
            async with websockets.connect(f"{gw.ws_url}/ws?token={session.token}") as ws:
                await ws.wait_closed()
                assert ws.close_code == change.ws_code
            if change.name in ("disable", "delete_key"):  # and the API key gets no new token
                answer = await session.http[side].post("/token", headers={"Authorization": f"Bearer {session.key}"})
                assert_refusal(answer, change)
            code, said = await mosquitto_pub(gw, session.token)
            assert code != 0 and change.mqtt_refusal in said.lower(), said
        # nothing sent after the change was stored
        assert await stored_messages(nats_server.url, session.user_id) == session.published + late[0] + late[1]
        if change.name == "disable":  # enabling restores access at once, on both replicas
            enabled = a.admin("PATCH", f"/api/v1/admin/users/{session.user_id}", json={"disabled": False})
            assert enabled.status_code == 200
            for side in (0, 1):
                assert (await session.publish(side)).status_code == 200
            async with websockets.connect(f"{b.ws_url}/ws?token={session.token}") as ws:
                await ws.send(orjson.dumps({"action": "ping", "id": 1}).decode())
                assert orjson.loads(await ws.recv())["action"] == "pong"
            assert (await mosquitto_pub(b, session.token))[0] == 0
            queue = (await session.http[1].get("/api/v1/queues/jobs")).json()
            assert queue["approximate_visible"] == 2 + late[2] + late[3]  # the two sent before the change
        if change.name in ("admin_revoke_all", "user_revokes_own"):  # a token issued afterwards works
            fresh = {"Authorization": f"Bearer {a.token(session.key)}"}
            answer = await session.http[1].post("/api/v1/publish", json={"topic": "t", "message": "m"}, headers=fresh)
            assert answer.status_code == 200
    finally:
        await close_all(stack)


async def test_revoking_one_token_by_jti_leaves_the_others_and_bad_bodies_get_400(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    user_id, key = a.new_user()
    first, second = a.token(key), a.token(key)
    jti = _jti(first)
    assert a.admin("POST", f"/api/v1/admin/users/{user_id}/revoke-tokens", json={"jti": jti}).status_code == 200
    async with httpx.AsyncClient(base_url=b.base_url) as http:
        deadline = time.monotonic() + WITHIN
        change = Change("jti", 401, "token_revoked", 4401, "")
        headers = {"Authorization": f"Bearer {first}"}
        request = lambda: http.post("/api/v1/publish", json={"topic": "t", "message": "m"}, headers=headers)  # noqa: E731
        await refused_within(request, change, deadline)
        own = {"Authorization": f"Bearer {second}"}
        assert (await http.post("/api/v1/publish", json={"topic": "t", "message": "m"}, headers=own)).status_code == 200
        body: object
        for body in ({"jti": "not hex!"}, {"all": "yes"}, {"jti": "ab", "all": True}, {"other": 1}, []):
            answer = await http.post("/api/v1/tokens/revoke", json=body, headers=own)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
        answer = await http.post("/api/v1/tokens/revoke", json={"all": True}, headers=own)
        assert answer.status_code == 200 and answer.json()["revoked"] == "all"
        assert_refusal(await http.post("/api/v1/tokens/revoke", headers=own), change)
    assert a.admin("POST", "/api/v1/admin/users/nobody-here/revoke-tokens").status_code == 404


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def test_a_long_poll_in_progress_hands_nothing_to_a_disabled_user(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    user_id, key = a.new_user()
    token = a.token(key)
    async with httpx.AsyncClient(base_url=b.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        sent = await http.post("/api/v1/queues/later/messages", json={"body": "job", "delay_seconds": 2})
        assert sent.status_code == 200
        poll = asyncio.create_task(http.get("/api/v1/queues/later/messages", params={"wait": 15}))
        user = f"/api/v1/admin/users/{user_id}"
        assert (await asyncio.to_thread(a.admin, "PATCH", user, json={"disabled": True})).status_code == 200
        assert_refusal(await poll, Change("disable", 403, "user_disabled", 4403, ""))  # once the message showed up
        assert (await asyncio.to_thread(a.admin, "PATCH", user, json={"disabled": False})).status_code == 200
        received = await http.get("/api/v1/queues/later/messages", params={"wait": 10})
        assert [m["body"] for m in received.json()["messages"]] == ["job"]  # it went back to the queue


async def test_a_replica_started_later_knows_every_change_before_it_serves(
    replicas: tuple[Gateway, Gateway], nats_server: NatsServer, make_gateway: Any
) -> None:
    a, _ = replicas
    refused: list[tuple[str, Change]] = []
    for change in CHANGES:
        user_id, key = a.new_user()
        session = Session(user_id, key, a.token(key), [])
        await make_change(change, a, session)
        refused.append((session.token, change))
    late = make_gateway(nats_server.url, admin_key=a.admin_key, secret_key=a.secret_key)
    async with httpx.AsyncClient(base_url=late.base_url) as http:
        for token, change in refused:
            answer = await http.post(
                "/api/v1/publish", json={"topic": "t", "message": "m"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert_refusal(answer, change)
