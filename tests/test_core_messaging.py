"""HTTP publish and SSE against the real gateway and nats-server: order, resume, idempotency, isolation, names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, NatsServer
from tests.sse_client import collect, events


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=15) as c:
        yield c


async def publish(client: httpx.AsyncClient, token: str, topic: str, message: object, **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/publish", headers=auth(token) | headers, json={"topic": topic, "message": message}
    )
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


async def test_publish_then_sse_in_order_with_types(gateway: Gateway, client: httpx.AsyncClient) -> None:
    user_id, token = gateway.user_token(app="myapp")
    messages = ["Hello World!", {"temp": 21.5}, [1, "two"], 42, None, True, "", "ünï\ncode"]
    async with client.stream("GET", "/api/v1/subscribe", params={"topic": "notifications", "token": token}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        acks = [await publish(client, token, "notifications", m) for m in messages]
        received = await collect(stream, len(messages))
    assert [a["topic"] for a in acks] == [f"{user_id}_myapp_notifications"] * len(messages)
    assert [int(e.id or 0) for e in received] == [a["seq"] for a in acks] == sorted(a["seq"] for a in acks)
    for event, sent in zip(received, messages, strict=True):
        body = event.json()
        assert body["topic"] == "notifications" and body["data"] == sent and body["seq"] == int(event.id or 0)
        assert body["published_at"].endswith("Z")


async def test_last_event_id_resumes_without_gap_or_duplicate(gateway: Gateway, client: httpx.AsyncClient) -> None:
    _, token = gateway.user_token()
    params = {"topic": "feed", "token": token}
    async with client.stream("GET", "/api/v1/subscribe", params=params) as stream:
        first = [await publish(client, token, "feed", i) for i in range(5)]
        seen = await collect(stream, 3)
    # disconnected after 3 of 5; 5 more arrive while away, plus noise on another topic
    later = [await publish(client, token, "feed", i) for i in range(5, 10)]
    await publish(client, token, "other", "noise")
    last_id = seen[-1].id
    async with client.stream(
        "GET", "/api/v1/subscribe", params=params, headers={"Last-Event-ID": last_id or ""}
    ) as stream:
        resumed = await collect(stream, 7)
        live = await publish(client, token, "feed", 10)
        resumed += await collect(stream, 1)
    assert [e.json()["data"] for e in seen + resumed] == list(range(11))
    assert [int(e.id or 0) for e in seen + resumed] == [a["seq"] for a in [*first, *later, live]]
    # the query parameter works the same as the header
    async with client.stream(
        "GET", "/api/v1/subscribe", params=params | {"last_event_id": str(later[-1]["seq"])}
    ) as stream:
        assert [e.json()["data"] for e in await collect(stream, 1)] == [10]


async def test_wildcards_and_several_topics_in_one_stream(gateway: Gateway, client: httpx.AsyncClient) -> None:
    _, token = gateway.user_token()
    url = f"/api/v1/subscribe?topic=sensors/%2B/temp&topic=alerts/%23&token={token}"
    async with client.stream("GET", url) as stream:
        for topic in ("sensors/a/temp", "sensors/a/humidity", "alerts", "alerts/fire/x", "other", "sensors/b/temp"):
            await publish(client, token, topic, topic)
        got = await collect(stream, 4)
    assert [e.json()["topic"] for e in got] == ["sensors/a/temp", "alerts", "alerts/fire/x", "sensors/b/temp"]


async def test_idempotent_retry_returns_the_same_seq(gateway: Gateway, client: httpx.AsyncClient) -> None:
    _, token = gateway.user_token()
    _, other = gateway.user_token()
    first = await publish(client, token, "orders", {"id": 1}, **{"Idempotency-Key": "order-1"})
    again = await publish(client, token, "orders", {"id": 1}, **{"Idempotency-Key": "order-1"})
    assert first["duplicate"] is False and again == first | {"duplicate": True}
    # keys are scoped to the namespace: another user's same key is a new message
    theirs = await publish(client, other, "orders", {"id": 1}, **{"Idempotency-Key": "order-1"})
    assert theirs["duplicate"] is False and theirs["seq"] != first["seq"]
    async with client.stream(
        "GET", "/api/v1/subscribe", params={"topic": "orders", "token": token, "last_event_id": str(first["seq"] - 1)}
    ) as s:
        marker = await publish(client, token, "orders", "marker")
        got = await collect(s, 2)
    assert [int(e.id or 0) for e in got] == [first["seq"], marker["seq"]]


async def test_namespaces_are_isolated(gateway: Gateway, client: httpx.AsyncClient) -> None:
    alice, alice_token = gateway.user_token(app="chat")
    bob, bob_token = gateway.user_token(app="chat")
    async with client.stream("GET", "/api/v1/subscribe", params={"topic": "#", "token": alice_token}) as alice_stream:
        # bob names alice's full topic: it stays in bob's namespace
        mine = await publish(client, bob_token, f"{alice}_chat_room", "from bob")
        assert mine["topic"] == f"{bob}_chat_{alice}_chat_room"
        # alice subscribing to bob's full name gets her own namespace's topic of that name
        async with client.stream(
            "GET", "/api/v1/subscribe", params={"topic": f"{bob}_chat_room", "token": alice_token}
        ) as s2:
            await publish(client, bob_token, "room", "bob only")
            marker = await publish(client, alice_token, f"{bob}_chat_room", "alice marker")
            got = await collect(s2, 1)
            assert got[0].json()["data"] == "alice marker" and int(got[0].id or 0) == marker["seq"]
        own = await publish(client, alice_token, "room", "alice")
        got = await collect(alice_stream, 2)
    assert [e.json()["data"] for e in got] == ["alice marker", "alice"] and int(got[1].id or 0) == own["seq"]


async def test_permissions_narrow_a_token(gateway: Gateway, client: httpx.AsyncClient) -> None:
    _, key = gateway.new_user()
    token = gateway.token(
        key,
        permissions={
            "publish": {"allow": ["sensors/#"]},
            "subscribe": {"allow": ["sensors/#"], "deny": ["sensors/secret/#"]},
        },
    )
    assert (
        await client.post("/api/v1/publish", headers=auth(token), json={"topic": "admin", "message": 1})
    ).status_code == 403
    assert (await client.get("/api/v1/subscribe", params={"topic": "#", "token": token})).status_code == 403
    async with client.stream("GET", "/api/v1/subscribe", params={"topic": "sensors/#", "token": token}) as stream:
        await publish(client, token, "sensors/secret/key", "hidden")
        visible = await publish(client, token, "sensors/a", "shown")
        got = await collect(stream, 1)
    assert int(got[0].id or 0) == visible["seq"]


@pytest.mark.parametrize(
    "name", ["with.dots", "with space", "ünïcødé/日本語", "$SYS/stats", "a//b", "/lead", "star*/gt>", "100%"]
)
async def test_names_round_trip(gateway: Gateway, client: httpx.AsyncClient, name: str) -> None:
    user_id, token = gateway.user_token(app="names")
    async with client.stream("GET", "/api/v1/subscribe", params={"topic": name, "token": token}) as stream:
        ack = await publish(client, token, name, "x")
        got = await collect(stream, 1)
    assert ack["topic"] == f"{user_id}_names_{name}"
    assert got[0].json()["topic"] == name


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"topic": "a"}', 400),
        (b'{"message": "x"}', 400),
        (b'{"topic": 5, "message": "x"}', 400),
        (b'{"topic": "a/#", "message": "x"}', 400),
        (b'{"topic": "", "message": "x"}', 400),
        (b"[]", 400),
    ],
)
async def test_publish_rejects_bad_bodies(
    gateway: Gateway, client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    _, token = gateway.user_token()
    response = await client.post("/api/v1/publish", headers=auth(token), content=body)
    assert response.status_code == status and response.json()["error"]["code"] in ("bad_request", "invalid_name")


async def test_oversized_message_is_413_and_not_stored(gateway: Gateway, client: httpx.AsyncClient) -> None:
    # FLOWGATE_MAX_MESSAGE_BYTES (1 MiB) is the gateway's ceiling; the pro plan's own limit is above it
    _, key = gateway.new_user(plan="pro")
    token = gateway.token(key)
    big = "x" * (1024 * 1024 + 1)
    response = await client.post("/api/v1/publish", headers=auth(token), json={"topic": "big", "message": big})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    fits = await publish(client, token, "big", "x" * (1024 * 1024 - 10))
    async with client.stream(
        "GET", "/api/v1/subscribe", params={"topic": "big", "token": token, "last_event_id": "0"}
    ) as s:
        got = await collect(s, 1)
    assert int(got[0].id or 0) == fits["seq"]


async def test_sse_refusals(gateway: Gateway, client: httpx.AsyncClient) -> None:
    _, token = gateway.user_token()
    assert (await client.get("/api/v1/subscribe", params={"topic": "a"})).status_code == 401
    assert (await client.get("/api/v1/subscribe", params={"token": token})).status_code == 400
    assert (await client.get("/api/v1/subscribe", params={"topic": "a/#/b", "token": token})).status_code == 400
    response = await client.get("/api/v1/subscribe", params={"topic": "a", "token": token, "last_event_id": "abc"})
    assert response.status_code == 400


async def test_heartbeat_keeps_idle_streams_open(make_gateway: Callable[..., Gateway], nats_server: NatsServer) -> None:
    gw = make_gateway(nats_server.url, env={"FLOWGATE_SSE_HEARTBEAT_SECONDS": "0.2"})
    _, token = gw.user_token()
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        async with c.stream("GET", "/api/v1/subscribe", params={"topic": "idle", "token": token}) as stream:
            lines = stream.aiter_lines()
            async with asyncio.timeout(5):
                while (await anext(lines)) != ": heartbeat":
                    pass


async def test_resume_after_retention_says_so(make_gateway: Callable[..., Gateway], nats_server: NatsServer) -> None:
    gw = make_gateway(nats_server.url)
    _, token = gw.user_token()
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        ack = await publish(c, token, "t", "only")
        # the stream's first sequence is past 1 once earlier tests' messages exist; resuming from 0 after a purge
        # is the same situation as retention removing messages:
        from tests.nats_admin import purge_messages

        await purge_messages(nats_server.url)
        after = await publish(c, token, "t", "after")
        async with c.stream(
            "GET", "/api/v1/subscribe", params={"topic": "t", "token": token, "last_event_id": str(ack["seq"] - 1)}
        ) as s:
            found = []
            async for event in events(s):
                found.append(event)
                if event.event == "message":
                    break
    assert found[0].event == "gap" and found[0].json()["first_available_seq"] == after["seq"]
    assert found[1].json()["data"] == "after"
