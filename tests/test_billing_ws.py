"""The billing guard over WebSocket: error frames 402/429 without closing, refusal at connect, deliveries billed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.billing_env import billing_gateway, stored
from tests.harness import Gateway, NatsServer
from tests.test_ws_gateway import Client


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    with billing_gateway(nats_server.url, "fg-billing-ws-") as gateway:
        yield gateway


def url(gw: Gateway, token: str) -> str:
    return f"{gw.ws_url}/ws?token={token}"


async def test_quota_gives_error_frames_402_without_closing_and_a_top_up_restores(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    token = gw.token(key)
    async with websockets.connect(url(gw, token)) as ws:
        client = Client(ws)
        answers = [await client.request(action="publish", topic="t", message=f"m{i}") for i in range(23)]
        assert [a["action"] for a in answers] == ["ack"] * 20 + ["error"] * 3
        error = answers[20]
        assert (error["code"], error["error"], error["limit"]) == (402, "payment_required", "monthly_quota")
        assert (error["used"], error["quota"], error["balance"]) == (20, 20, 0) and error["resets_at"]
        assert (await client.request(action="subscribe", topic="other"))["action"] == "ack"  # still open
        assert gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 50}).status_code == 200
        after = await client.request(action="publish", topic="t", message="after")
        assert after["action"] == "ack", after
    assert await stored(gw, token, 21) == [f"m{i}" for i in range(20)] + ["after"]


async def test_a_burst_gives_error_frames_429_without_closing(gw: Gateway) -> None:
    _, key = gw.new_user(plan="slow")  # burst 5
    token = gw.token(key)
    async with websockets.connect(url(gw, token)) as ws:
        client = Client(ws)
        answers = [await client.request(action="publish", topic="t", message=f"m{i}") for i in range(7)]
        assert [a["action"] for a in answers] == ["ack"] * 5 + ["error"] * 2
        assert (
            answers[5]["code"] == 429
            and answers[5]["retry_after"] > 0
            and answers[5]["burst"] == 5
            and answers[5]["limit"] == "rate"
        )
        assert (await client.request(action="subscribe", topic="t"))["action"] == "ack"
    assert await stored(gw, token, 5) == [f"m{i}" for i in range(5)]


async def test_connect_refused_with_4402_when_exhausted_or_all_connections_open(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")  # two connections
    token = gw.token(key)
    async with websockets.connect(url(gw, token)) as one, websockets.connect(url(gw, token)) as two:
        assert (await Client(one).request(action="subscribe", topic="a"))["action"] == "ack"
        assert (await Client(two).request(action="subscribe", topic="a"))["action"] == "ack"
        async with websockets.connect(url(gw, token)) as three:
            refused = await Client(three).recv()
            assert (refused["action"], refused["code"], refused["limit"]) == ("error", 402, "max_connections")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await three.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4402
    gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 0}})
    async with websockets.connect(url(gw, token)) as spent:
        refused = await Client(spent).recv()
        assert (refused["code"], refused["limit"]) == (402, "monthly_quota")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await spent.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4402


async def test_deliveries_over_websocket_are_billed(gw: Gateway) -> None:
    _, key = gw.new_user()
    token = gw.token(key)
    async with websockets.connect(url(gw, token)) as ws:
        client = Client(ws)
        assert (await client.request(action="subscribe", topic="t"))["action"] == "ack"
        for i in range(3):
            assert (await client.request(action="publish", topic="t", message=i))["action"] == "ack"
        assert [m["data"] for m in await client.messages(3)] == [0, 1, 2]
        async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            usage = (await http.get("/api/v1/usage")).json()
        assert usage["app_usage"] == {"publish": 3, "queue_send": 0, "delivery": 3, "units": 6}
        assert usage["connections"] == 1
