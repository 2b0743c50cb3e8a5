"""The WebSocket front-end end to end: the `websockets` client against the real gateway on a real nats-server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.harness import Gateway
from tests.sse_client import collect

TIMEOUT = 10


class Client:
    """A test client: frames as dicts; ``request`` waits for the answer to its ``id``, other frames are kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    async def send(self, **frame: Any) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame: dict[str, Any] = orjson.loads(await self.ws.recv())
            return frame

    async def request(self, **frame: Any) -> dict[str, Any]:
        frame_id = next(self._ids)
        await self.send(**frame, id=frame_id)
        while True:
            answer = await self.recv()
            if answer.get("id") == frame_id and answer["action"] in ("ack", "error"):
                return answer
            self.backlog.append(answer)

    async def next(self, action: str = "message", timeout: float = TIMEOUT) -> dict[str, Any]:
        for index, frame in enumerate(self.backlog):
            if frame["action"] == action:
                return self.backlog.pop(index)
        while True:
            frame = await self.recv(timeout)
            if frame["action"] == action:
                return frame
            self.backlog.append(frame)

    async def messages(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        return [await self.next("message", timeout) for _ in range(count)]

    async def subscribe(self, topic: str, **extra: Any) -> None:
        answer = await self.request(action="subscribe", topic=topic, **extra)
        assert answer["action"] == "ack", answer

    async def quiet(self) -> list[dict[str, Any]]:
        """Everything that arrives before a ping's pong (what is already on its way)."""
        frames = []
        await self.send(action="ping")
        while (frame := await self.recv())["action"] != "pong":
            frames.append(frame)
        return self.backlog + frames


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Any]:
    opened: list[ClientConnection] = []

    async def open_client(token: str, **kwargs: Any) -> Client:
        ws = await websockets.connect(f"{gateway.ws_url}/ws?token={token}", max_size=None, **kwargs)
        opened.append(ws)
        return Client(ws)

    yield open_client
    for ws in opened:
        await ws.close()


async def http_publish(gateway: Gateway, token: str, topic: str, message: object) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        answer = await http.post(
            gateway.base_url + "/api/v1/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": topic, "message": message},
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["seq"])


async def test_http_publish_reaches_ws_subscriber_with_types(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    client = await connect(token)
    await client.subscribe("notifications")
    sent: list[object] = ["Hello World!", {"n": 1, "nested": [1, "x", None]}, [1, 2], 42, True, None, "{not json}"]
    seqs = [await http_publish(gateway, token, "notifications", message) for message in sent]
    received = await client.messages(len(sent))
    assert [m["data"] for m in received] == sent
    assert [m["seq"] for m in received] == seqs
    assert {m["topic"] for m in received} == {"notifications"}
    assert all(m["published_at"].endswith("Z") for m in received)


async def test_ws_to_ws_across_connections(gateway: Gateway, connect: Any) -> None:
    user, key = gateway.new_user()
    subscriber = await connect(gateway.token(key))
    publisher = await connect(gateway.token(key))
    await subscriber.subscribe("chat/+")
    answer = await publisher.request(action="publish", topic="chat/room1", message={"text": "hi"})
    assert answer["action"] == "ack" and answer["topic"] == "chat/room1" and answer["seq"] > 0
    # The seed's shape: no id, no acknowledgement; a full name works as well as a short one.
    await publisher.send(action="publish", topic=f"{user}_app_chat/room2", message="no ack")
    assert await publisher.quiet() == []
    first, second = await subscriber.messages(2)
    assert (first["topic"], first["data"], first["seq"]) == ("chat/room1", {"text": "hi"}, answer["seq"])
    assert (second["topic"], second["data"]) == ("chat/room2", "no ack")


async def test_ws_publish_reaches_sse_subscriber(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    publisher = await connect(token)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=TIMEOUT) as http,
        http.stream("GET", "/api/v1/subscribe", params={"topic": "feed"}) as stream,
    ):
        assert stream.status_code == 200
        acks = [
            await publisher.request(action="publish", topic="feed", message=message)
            for message in ({"temp": 21.5}, "plain text")
        ]
        events = await collect(stream, 2)
    assert [e.json()["data"] for e in events] == [{"temp": 21.5}, "plain text"]
    assert [int(e.id or 0) for e in events] == [a["seq"] for a in acks]


async def test_binary_payload_arrives_as_base64(gateway: Gateway, connect: Any) -> None:
    user, token = gateway.user_token()
    client = await connect(token)
    await client.subscribe("raw")
    nc = await nats.connect(gateway.environment()["FLOWGATE_NATS_URL"])
    try:
        await nc.jetstream().publish(f"fg.msg.{user}.app.raw", b"\x00\x01\xfe\xff", headers={"Fg-Type": "binary"})
    finally:
        await nc.close()
    message = await client.next()
    assert (message["data"], message["encoding"]) == ("AAH+/w==", "base64")


async def test_wildcards_full_names_and_unsubscribe(gateway: Gateway, connect: Any) -> None:
    user, key = gateway.new_user()
    token = gateway.token(key)
    client = await connect(token)
    witness = await connect(token)  # shares the hub subscription of "sensors/#", so it sees what client would
    await client.subscribe(f"{user}_app_sensors/#")
    await witness.subscribe("sensors/#")
    await http_publish(gateway, token, "sensors", 1)
    await http_publish(gateway, token, "sensors/a/b", 2)
    await http_publish(gateway, token, "other", 3)
    assert [(m["topic"], m["data"]) for m in await client.messages(2)] == [("sensors", 1), ("sensors/a/b", 2)]
    answer = await client.request(action="unsubscribe", topic="sensors/#")
    assert answer["action"] == "ack"
    await http_publish(gateway, token, "sensors/c", 4)
    assert [m["data"] for m in await witness.messages(3)] == [1, 2, 4]
    assert await client.quiet() == []
    missing = await client.request(action="unsubscribe", topic="sensors/#")
    assert (missing["action"], missing["code"]) == ("error", 404)


async def test_subscribing_twice_delivers_once(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    client = await connect(token)
    await client.subscribe("dup")
    await client.subscribe("dup")
    seq = await http_publish(gateway, token, "dup", "once")
    assert (await client.next())["seq"] == seq
    assert await client.quiet() == []


async def test_since_replays_then_continues_live_without_gap_or_duplicate(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    before = [await http_publish(gateway, token, "log", i) for i in range(20)]
    client = await connect(token)

    async def publish_more() -> list[int]:
        return [await http_publish(gateway, token, "log", 100 + i) for i in range(30)]

    more = asyncio.create_task(publish_more())  # publishes while the replay runs
    await client.subscribe("log", since=before[9])
    after = await more
    received = await client.messages(10 + len(after))
    assert [m["seq"] for m in received] == before[10:] + after
    assert [m["data"] for m in received] == list(range(10, 20)) + [100 + i for i in range(30)]
    assert await client.quiet() == []


async def test_since_zero_replays_everything_of_the_topic(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    seqs = [await http_publish(gateway, token, "all", i) for i in range(3)]
    client = await connect(token)
    await client.subscribe("all", since=0)
    assert [m["seq"] for m in await client.messages(3)] == seqs


async def test_a_namespace_cannot_reach_another(gateway: Gateway, connect: Any) -> None:
    alice, alice_token = gateway.user_token()
    _, bob_token = gateway.user_token()
    bob = await connect(bob_token)
    # Alice's full name is just a (strange) short name inside Bob's namespace.
    await bob.subscribe(f"{alice}_app_secret")
    await bob.subscribe("#")
    await http_publish(gateway, alice_token, "secret", "for alice only")
    ack = await bob.request(action="publish", topic=f"{alice}_app_secret", message="bob's own")
    assert ack["topic"] == f"{alice}_app_secret"
    got = await bob.messages(2)
    assert [m["data"] for m in got] == ["bob's own", "bob's own"]
    assert await bob.quiet() == []


async def test_permissions_are_enforced_and_the_connection_keeps_working(gateway: Gateway, connect: Any) -> None:
    _, key = gateway.new_user()
    permissions = {"publish": {"allow": ["out/#"]}, "subscribe": {"allow": ["in/#"], "deny": ["in/private"]}}
    token = gateway.token(key, permissions=permissions)
    client = await connect(token)
    refused = await client.request(action="subscribe", topic="secrets")
    assert (refused["action"], refused["code"], refused["error"], refused["topic"]) == (
        "error",
        403,
        "forbidden",
        "secrets",
    )
    refused = await client.request(action="publish", topic="in/x", message=1)
    assert (refused["action"], refused["code"]) == ("error", 403)
    await client.subscribe("in/+")
    full = gateway.token(key)
    await http_publish(gateway, full, "in/private", "hidden")
    seq = await http_publish(gateway, full, "in/public", "shown")
    message = await client.next()
    assert (message["data"], message["seq"]) == ("shown", seq)
    ack = await client.request(action="publish", topic="out/a", message="ok")
    assert ack["action"] == "ack"


async def test_malformed_frames_are_answered_and_the_connection_keeps_working(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    client = await connect(token)
    await client.ws.send("this is not json")
    assert (await client.next("error"))["code"] == 400
    await client.ws.send("[1, 2, 3]")
    assert (await client.next("error"))["code"] == 400
    await client.send(action="shout", id="a")
    error = await client.next("error")
    assert (error["id"], error["code"], error["error"]) == ("a", 400, "bad_request")
    for frame in (
        {"action": "subscribe"},
        {"action": "subscribe", "topic": "a/#/b"},
        {"action": "publish", "topic": "a/+", "message": 1},
        {"action": "publish", "topic": "a"},
        {"action": "subscribe", "topic": "a", "since": "yesterday"},
    ):
        answer = await client.request(**frame)
        assert (answer["action"], answer["code"]) == ("error", 400), (frame, answer)
    too_big = await client.request(action="publish", topic="big", message="x" * (1024 * 1024 + 1))
    assert (too_big["action"], too_big["code"], too_big["error"]) == ("error", 413, "payload_too_large")
    await client.send(action="ping", id=99)
    assert await client.next("pong") == {"action": "pong", "id": 99}
    await client.subscribe("still/works")
    ack = await client.request(action="publish", topic="still/works", message="yes")
    assert (await client.next())["seq"] == ack["seq"]


async def test_binary_frames_carry_json_too(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    client = await connect(token)
    await client.ws.send(orjson.dumps({"action": "ping", "id": "b"}))
    assert await client.next("pong") == {"action": "pong", "id": "b"}


@pytest.mark.parametrize("where", ["missing", "garbage", "wrong-key", "expired"])
async def test_bad_tokens_are_closed_with_4401(gateway: Gateway, where: str) -> None:
    url = f"{gateway.ws_url}/ws"
    if where == "garbage":
        url += "?token=not.a.jwt"
    elif where == "wrong-key":
        url += "?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    elif where == "expired":
        _, key = gateway.new_user()
        token = gateway.token(key, ttl=1)
        await asyncio.sleep(max(0.0, _exp(token) - time.time()) + 0.1)  # waiting for the clock itself
        url += f"?token={token}"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_authorization_header_works(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with websockets.connect(
        f"{gateway.ws_url}/ws", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send('{"action": "ping"}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {"action": "pong"}


def _exp(token: str) -> int:
    import jwt

    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_token_refresh_then_expiry_closes_with_4401(gateway: Gateway, connect: Any) -> None:
    _, key = gateway.new_user()
    first = gateway.token(key, ttl=3)
    client = await connect(first)
    await client.subscribe("t")
    warning = await client.next("token_expiring", timeout=6)
    assert warning["expires_at"] == _exp(first)
    assert time.time() < _exp(first)  # warned before expiry

    # A token of another user or app is refused; the connection keeps its own.
    other_app = gateway.token(key, app="other")
    refused = await client.request(action="auth", token=other_app)
    assert (refused["action"], refused["code"]) == ("error", 403)
    refused = await client.request(action="auth", token="garbage")
    assert (refused["action"], refused["code"]) == ("error", 401)

    second = gateway.token(key, ttl=4)
    answer = await client.request(action="auth", token=second)
    assert answer == {"action": "ack", "id": answer["id"], "expires_at": _exp(second)}
    assert _exp(second) > _exp(first)

    # Still open after the first token's expiry, and delivering.
    await asyncio.sleep(max(0.0, _exp(first) - time.time()) + 0.5)  # waiting out the first token: the behaviour
    seq = await http_publish(gateway, gateway.token(key), "t", "after refresh")
    assert (await client.next())["seq"] == seq

    warning = await client.next("token_expiring", timeout=6)
    assert warning["expires_at"] == _exp(second)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await client.recv(timeout=8)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert time.time() >= _exp(second) - 1  # not before the refreshed token ran out (whole-second exp)


async def test_metrics_count_ws_connections_and_deliveries(gateway: Gateway, connect: Any) -> None:
    _, token = gateway.user_token()
    client = await connect(token)
    await client.subscribe("m")
    await http_publish(gateway, token, "m", 1)
    await client.next()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        metrics = (await http.get(gateway.base_url + "/metrics")).text
    assert 'flowgate_connections{protocol="ws"}' in metrics
    assert 'flowgate_messages_delivered_total{protocol="ws"}' in metrics


async def test_shutdown_closes_with_1012(nats_server: Any, make_gateway: Any) -> None:
    own: Gateway = make_gateway(nats_server.url)
    _, token = own.user_token()
    async with websockets.connect(f"{own.ws_url}/ws?token={token}") as ws:
        await ws.send('{"action": "subscribe", "topic": "t", "id": 1}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["action"] == "ack"
        stopping = asyncio.create_task(asyncio.to_thread(own.stop))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        await stopping
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


async def test_server_pings_keep_idle_connections_and_drop_dead_ones(nats_server: Any, make_gateway: Any) -> None:
    own: Gateway = make_gateway(nats_server.url, env={"FLOWGATE_WS_PING_SECONDS": "1"})
    _, token = own.user_token()
    # A live client (websockets answers pings by itself) idles through several ping intervals.
    async with websockets.connect(f"{own.ws_url}/ws?token={token}", ping_interval=None) as live:
        # A dead peer: completes the handshake, then never answers anything.
        reader, writer = await asyncio.open_connection("127.0.0.1", own.http_port)
        writer.write(
            (
                f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            received = await reader.read()  # until the server gives up on it and closes
        writer.close()
        frames, pos = [], 0
        while pos < len(received):  # short unmasked server frames: opcode, length, payload
            size = received[pos + 1] & 0x7F
            frames.append((received[pos] & 0x0F, received[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        assert frames[0][0] == 0x9  # a ping came first
        assert frames[-1][0] == 0x8 and int.from_bytes(frames[-1][1][:2], "big") == 1011  # no pong in time
        await live.send('{"action": "ping"}')
        assert orjson.loads(await asyncio.wait_for(live.recv(), TIMEOUT)) == {"action": "pong"}


async def test_one_bus_subscription_per_subject_released_with_the_last_client(gateway: Gateway, connect: Any) -> None:
    user, token = gateway.user_token()
    subject = f"fg.msg.{user}.app.shared"
    nc = await nats.connect(gateway.environment()["FLOWGATE_NATS_URL"])
    js = nc.jetstream()

    async def consumers() -> int:
        infos = await js.consumers_info("FG_MESSAGES")
        return sum(1 for info in infos if info.config.filter_subject == subject)

    async def settles_at(count: int) -> None:
        async with asyncio.timeout(30):  # an unsubscribed ephemeral consumer goes when the server expires it
            while await consumers() != count:  # noqa: ASYNC110 - the state lives in nats-server
                await asyncio.sleep(0.05)  # polling the server's view; the count is the assertion

    try:
        clients = [await connect(token) for _ in range(3)]
        for client in clients:
            await client.subscribe("shared")
        await settles_at(1)
        seq = await http_publish(gateway, token, "shared", "to all three")
        for client in clients:
            assert (await client.next())["seq"] == seq
        for client in clients[:2]:
            await client.ws.close()
        seq = await http_publish(gateway, token, "shared", "to the last one")
        assert (await clients[2].next())["seq"] == seq  # one client left: the subscription stays
        assert await consumers() == 1
        await clients[2].ws.close()
        await settles_at(0)
    finally:
        await nc.close()


async def test_since_beyond_retention_says_so_first(make_nats: Any, make_gateway: Any) -> None:
    from tests.nats_admin import purge_messages

    private = make_nats()  # the purge stands in for retention; keep it away from the shared stream
    own: Gateway = make_gateway(private.url)
    _, token = own.user_token()
    first = await http_publish(own, token, "kept", "gone soon")
    await purge_messages(private.url)
    after = await http_publish(own, token, "kept", "after")
    async with websockets.connect(f"{own.ws_url}/ws?token={token}") as ws:
        client = Client(ws)
        await client.subscribe("kept", since=first - 1)
        frames = [client.backlog.pop(0) if client.backlog else await client.recv() for _ in range(2)]
    assert frames[0] == {
        "action": "gap",
        "topic": "kept",
        "requested_seq": first,
        "first_available_seq": after,
        "reason": "retention",
    }
    assert (frames[1]["action"], frames[1]["seq"], frames[1]["data"]) == ("message", after, "after")


async def test_nats_outage_is_503_and_the_connection_recovers(make_nats: Any, make_gateway: Any) -> None:
    private = make_nats()
    own: Gateway = make_gateway(private.url)
    _, token = own.user_token()
    async with websockets.connect(f"{own.ws_url}/ws?token={token}") as ws:
        client = Client(ws)
        await client.subscribe("outage")
        before = await client.request(action="publish", topic="outage", message="before")
        assert (await client.next())["seq"] == before["seq"]
        private.stop()
        refused = await client.request(action="publish", topic="outage", message="during")
        assert (refused["action"], refused["code"], refused["error"]) == ("error", 503, "unavailable")
        private.start()
        async with asyncio.timeout(30):
            while (answer := await client.request(action="publish", topic="outage", message="after"))[
                "action"
            ] != "ack":
                assert answer["code"] == 503  # until the gateway has reconnected
                await asyncio.sleep(0.2)  # retrying like a client would
        message = await client.next(timeout=30)  # the hub's subscription is back too
        assert (message["data"], message["seq"]) == ("after", answer["seq"])
