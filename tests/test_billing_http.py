"""The billing guard over HTTP and SSE on a real gateway: 402, 429, top-ups, usage, admin, POST /token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.billing_env import billing_env, billing_gateway
from tests.harness import Gateway, NatsServer, temp_dir
from tests.sse_client import collect
from tests.waiting import poll


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    with billing_gateway(nats_server.url, "fg-billing-") as gateway:
        yield gateway


def next_month() -> str:
    now = datetime.now(UTC)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def client(gw: Gateway, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


async def replay(gw: Gateway, token: str, count: int) -> list[str]:
    """Every message stored in the token's namespace, oldest first: an SSE stream from sequence 0."""
    async with client(gw, token) as http:
        params = {"topic": "#", "last_event_id": "0"}
        async with http.stream("GET", "/api/v1/subscribe", params=params) as response:
            assert response.status_code == 200
            return [e.json()["data"] for e in await collect(response, count)]


async def test_the_message_crossing_the_quota_gets_402_and_a_top_up_restores_service(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    token = gw.token(key)
    async with client(gw, token) as http:
        answers = [await http.post("/api/v1/publish", json={"topic": "t", "message": f"m{i}"}) for i in range(25)]
        assert [a.status_code for a in answers] == [200] * 20 + [402] * 5
        error = answers[20].json()["error"]
        assert error["code"] == "payment_required"
        assert (error["limit"], error["used"], error["quota"], error["balance"]) == ("monthly_quota", 20, 20, 0)
        assert error["resets_at"] == next_month()
        top_up = gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 100})
        assert top_up.status_code == 200 and top_up.json()["balance"] == 100
        after = await http.post("/api/v1/publish", json={"topic": "t", "message": "after"})
        assert after.status_code == 200, after.text  # at once, no waiting for a sync
        end = await http.post("/api/v1/publish", json={"topic": "t", "message": "end"})
        assert end.status_code == 200
    # nothing refused was stored, everything accepted was
    assert await replay(gw, token, 22) == [f"m{i}" for i in range(20)] + ["after", "end"]


async def test_usage_reports_period_used_quota_balance_and_rate(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    token = gw.token(key, app="one")
    async with client(gw, token) as http:
        for i in range(3):
            assert (await http.post("/api/v1/publish", json={"topic": "t", "message": i})).status_code == 200
        gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 7})
        usage = (await http.get("/api/v1/usage")).json()
    now = datetime.now(UTC)
    assert usage["period"]["id"] == f"{now.year:04d}-{now.month:02d}"
    assert usage["resets_at"] == usage["period"]["end"] == next_month()
    assert (usage["plan"], usage["used"], usage["quota"]) == ("tiny", 3, 20)
    assert usage["balance"] == 7 and usage["remaining"] == 20 - 3 + 7
    assert usage["app_usage"] == {"publish": 3, "queue_send": 0, "delivery": 0, "units": 3}
    assert usage["rate_limit"]["rate"] == 10_000 and usage["rate_limit"]["burst"] == 10_000
    assert usage["prices"] == {"publish": 1, "queue_send": 1, "delivery": 1}
    async with client(gw, gw.token(key, app="two")) as http:
        other = (await http.get("/api/v1/usage")).json()
    assert other["used"] == 3 and other["app_usage"]["units"] == 0, other  # the quota is the user's, across apps
    admin_view = gw.admin("GET", f"/api/v1/admin/users/{user_id}/usage").json()
    assert admin_view["used"] == 3 and admin_view["apps"]["one"]["publish"] == 3 and admin_view["balance"] == 7
    assert gw.admin("GET", "/api/v1/admin/users/nobody-here/usage").status_code == 404
    async with httpx.AsyncClient(base_url=gw.base_url) as anonymous:
        assert (await anonymous.get("/api/v1/usage")).status_code == 401


async def test_deliveries_are_billed(gw: Gateway) -> None:
    _, key = gw.new_user()
    token = gw.token(key)
    async with client(gw, token) as http:
        async with http.stream("GET", "/api/v1/subscribe", params={"topic": "t"}) as stream:
            for i in range(3):
                assert (await http.post("/api/v1/publish", json={"topic": "t", "message": i})).status_code == 200
            assert [e.json()["data"] for e in await collect(stream, 3)] == [0, 1, 2]
        usage = (await http.get("/api/v1/usage")).json()
    assert usage["app_usage"] == {"publish": 3, "queue_send": 0, "delivery": 3, "units": 6}
    assert usage["connections"] == 0


async def test_a_burst_beyond_the_rate_gets_429_with_headers(gw: Gateway) -> None:
    _, key = gw.new_user(plan="slow")  # burst 5, then one message per 20 s
    token = gw.token(key)
    async with client(gw, token) as http:
        answers = [await http.post("/api/v1/publish", json={"topic": "t", "message": f"m{i}"}) for i in range(8)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        refused = answers[5]
        assert refused.json()["error"]["code"] == "rate_limited"
        headers = refused.headers
        assert headers["RateLimit-Limit"] == "5" and headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(headers["Retry-After"]) <= 20
        assert int(headers["Retry-After"]) <= int(headers["RateLimit-Reset"]) <= 100
        assert refused.json()["error"]["retry_after"] > 0
    # a 429 is neither stored nor billed
    async with client(gw, token) as http:
        assert (await http.get("/api/v1/usage")).json()["app_usage"]["publish"] == 5
    assert await replay(gw, token, 5) == [f"m{i}" for i in range(5)]


async def test_sse_refused_when_exhausted_and_beyond_max_connections(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")  # 2 connections
    token = gw.token(key)
    async with client(gw, token) as http:
        async with http.stream("GET", "/api/v1/subscribe", params={"topic": "a"}) as first:
            async with http.stream("GET", "/api/v1/subscribe", params={"topic": "b"}) as second:
                assert first.status_code == second.status_code == 200
                third = await http.get("/api/v1/subscribe", params={"topic": "c"})
                assert third.status_code == 402
                assert third.json()["error"]["limit"] == "max_connections"

        # closed connections are counted out once the server has seen them go (nothing tells the client when)
        async def subscribe_again() -> httpx.Response:
            async with http.stream("GET", "/api/v1/subscribe", params={"topic": "c"}) as again:
                return again

        again = await poll(
            subscribe_again, lambda r: r.status_code == 200, what="a connection counted out", timeout=5, every=0.1
        )
        assert again.status_code == 200
        gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 0}})
        refused = await http.get("/api/v1/subscribe", params={"topic": "c"})
        assert refused.status_code == 402 and refused.json()["error"]["limit"] == "monthly_quota"


async def test_admin_plans_overrides_and_credits(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    assert gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"plan": "nope"}).status_code == 400
    assert gw.admin("POST", "/api/v1/admin/users", json={"user_id": "x-nope", "plan": "nope"}).status_code == 400
    bad = gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": -1}})
    assert bad.status_code == 400
    changed = gw.admin(
        "PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 3, "max_message_bytes": 10}}
    )
    assert changed.status_code == 200 and changed.json()["extra"]["limits"] == {"quota": 3, "max_message_bytes": 10}
    async with client(gw, gw.token(key)) as http:
        big = await http.post("/api/v1/publish", json={"topic": "t", "message": "x" * 11})
        assert big.status_code == 413 and big.json()["error"]["limit"] == "max_message_bytes"
        codes = [(await http.post("/api/v1/publish", json={"topic": "t", "message": i})).status_code for i in range(5)]
        assert codes == [200, 200, 200, 402, 402]
        restored = gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": None}})
        assert restored.json()["extra"]["limits"] == {"max_message_bytes": 10}
        assert (await http.post("/api/v1/publish", json={"topic": "t", "message": 1})).status_code == 200
        gw.admin(
            "PATCH", f"/api/v1/admin/users/{user_id}", json={"plan": "free", "limits": {"max_message_bytes": None}}
        )
        assert (await http.post("/api/v1/publish", json={"topic": "t", "message": "x" * 500})).status_code == 200
    assert gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 0}).status_code == 400
    assert gw.admin("POST", "/api/v1/admin/users/nobody-here/credits", json={"amount": 5}).status_code == 404
    async with httpx.AsyncClient(base_url=gw.base_url) as anonymous:
        assert (await anonymous.post(f"/api/v1/admin/users/{user_id}/credits", json={"amount": 5})).status_code == 401


async def test_token_endpoint_is_rate_limited_per_key_and_per_address(
    nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    data = temp_dir("fg-billing-token-")
    env = billing_env(data, FLOWGATE_TOKEN_RATE_PER_KEY="0.3", FLOWGATE_TOKEN_RATE_PER_ADDRESS="1.2")
    gw = make_gateway(nats_server.url, env=env)
    _, key = gw.new_user()
    _, other_key = gw.new_user()

    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:

        async def token(api_key: str) -> httpx.Response:
            return await http.post("/token", headers={"Authorization": f"Bearer {api_key}"}, json={})

        codes = [(await token(key)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]  # a burst of 10 s at 0.3/s
        refused = await token(key)
        assert refused.status_code == 429 and refused.headers["RateLimit-Limit"] == "3"
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await token(other_key)).status_code == 200  # another key is not affected
        # grinding: wrong secrets for many key ids from one address hit the address limit (burst 12)
        answers = await asyncio.gather(*(token(f"fgk_{i:016x}_{'x' * 40}") for i in range(20)))
        codes = sorted(a.status_code for a in answers)
        assert 401 in codes and codes.count(429) >= 20 - 12


async def test_an_api_key_with_its_own_rate_limit(gw: Gateway) -> None:
    user_id, plain_key = gw.new_user()
    created = gw.admin(
        "POST", f"/api/v1/admin/users/{user_id}/keys", json={"name": "sensor", "rate_limit": {"rate": 0.05, "burst": 3}}
    )
    assert created.status_code == 201 and created.json()["rate_limit"] == {"rate": 0.05, "burst": 3}
    listed = gw.admin("GET", f"/api/v1/admin/users/{user_id}/keys").json()["keys"]
    assert sorted(str(k.get("rate_limit")) for k in listed) == ["None", "{'rate': 0.05, 'burst': 3}"]
    limited, plain = gw.token(created.json()["key"]), gw.token(plain_key)
    async with client(gw, limited) as http:
        answers = [await http.post("/api/v1/publish", json={"topic": "t", "message": i}) for i in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert answers[3].headers["RateLimit-Limit"] == "3" and "API key" in answers[3].json()["error"]["message"]
        # a key may only restrict: its limit cannot exceed the plan's
        bad = await http.post("/api/v1/keys", json={"name": "x", "rate_limit": {"rate": 0}})
        assert bad.status_code == 400
    async with client(gw, plain) as http:  # the user's other key is not limited by it
        codes = [(await http.post("/api/v1/publish", json={"topic": "t", "message": i})).status_code for i in range(5)]
        assert codes == [200] * 5


async def test_accepted_messages_are_delivered_even_when_deliveries_cross_the_quota(gw: Gateway) -> None:
    _, key = gw.new_user(plan="tiny")  # 20 units: publishes and deliveries both count
    token = gw.token(key)
    async with client(gw, token) as http:
        async with http.stream("GET", "/api/v1/subscribe", params={"topic": "t"}) as stream:
            accepted: list[int] = []
            for i in range(40):
                answer = await http.post("/api/v1/publish", json={"topic": "t", "message": i})
                if answer.status_code == 402:
                    break
                assert answer.status_code == 200
                accepted.append(i)
            assert 10 <= len(accepted) <= 20  # each accepted message also costs its delivery
            # nothing accepted is refused afterwards: every accepted message reaches the subscriber
            assert [e.json()["data"] for e in await collect(stream, len(accepted))] == accepted
        usage = (await http.get("/api/v1/usage")).json()
    assert usage["app_usage"]["publish"] == len(accepted)
    assert usage["app_usage"]["delivery"] == len(accepted)
