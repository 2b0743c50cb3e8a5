"""The HTTP API the dashboard added: usage history (replica-safe, in KV), admin stats and plans, server info."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.harness import Gateway, NatsServer
from tests.waiting import poll


async def _publish(gw: Gateway, token: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for n in range(count):
            answer = await http.post("/api/v1/publish", json={"topic": "history", "message": n})
            assert answer.status_code == 200, answer.text


async def test_usage_history_adds_up_the_replicas_per_hour_and_per_day(
    gateway: Gateway, nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    a = gateway  # and a second replica beside it: same NATS, same keys
    b = make_gateway(nats_server.url, admin_key=a.admin_key, secret_key=a.secret_key)
    user_id, key = a.new_user()
    token = a.token(key)
    await asyncio.gather(_publish(a, token, 5), _publish(b, token, 7))
    async with httpx.AsyncClient(timeout=10) as http:

        async def read() -> dict[str, Any]:
            answer = await http.get(a.base_url + "/api/v1/usage/history", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            history: dict[str, Any] = answer.json()
            return history

        # each replica adds its counts at its next billing sync (0.5 s); nothing announces it outside the process
        history = await poll(read, lambda h: h["hourly"][-1]["units"] >= 12, what="12 units in the history", timeout=10)
        now = datetime.now(UTC)
        assert history["user_id"] == user_id
        assert len(history["hourly"]) == 48
        assert history["hourly"][-1] == {"start": now.strftime("%Y-%m-%dT%H:00:00Z"), "units": 12}
        assert sum(h["units"] for h in history["hourly"]) == 12
        assert len(history["daily"]) == now.day
        assert history["daily"][-1] == {"date": now.strftime("%Y-%m-%d"), "units": 12}
        assert history["period"]["id"] == now.strftime("%Y-%m")
        admin = {"Authorization": f"Bearer {b.admin_key}"}
        twin = await http.get(f"{b.base_url}/api/v1/admin/users/{user_id}/usage/history", headers=admin)
        assert twin.json()["hourly"] == history["hourly"]
        missing = await http.get(f"{b.base_url}/api/v1/admin/users/nobody-here/usage/history", headers=admin)
        assert missing.status_code == 404
        assert (await http.get(a.base_url + "/api/v1/usage/history")).status_code == 401
        answer = await http.get(f"{a.base_url}/api/v1/admin/users/{user_id}/usage/history")
        assert answer.status_code == 401


async def test_admin_stats_count_messages_and_http_errors(gateway: Gateway) -> None:
    admin = {"Authorization": f"Bearer {gateway.admin_key}"}
    _, token = gateway.user_token()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        assert (await http.get("/api/v1/admin/stats")).status_code == 401
        before = (await http.get("/api/v1/admin/stats", headers=admin)).json()
        await _publish(gateway, token, 3)
        assert (await http.get("/api/v1/no-such-route")).status_code == 404
        bad = await http.post("/api/v1/publish", headers={"Authorization": "Bearer nope"}, json={})
        assert bad.status_code == 401
        after = (await http.get("/api/v1/admin/stats", headers=admin)).json()
    assert after["ready"] is True and after["nats"] is True
    assert after["totals"]["published"] - before["totals"]["published"] >= 3
    assert after["published"].get("http", 0) >= 3
    assert after["totals"]["http_4xx"] - before["totals"]["http_4xx"] >= 2  # the 404 and the 401 (fast path)
    assert after["per_second"]["published"] > 0
    assert set(after["per_second"]) == {"published", "delivered", "rejected", "slow_consumers", "http_4xx", "http_5xx"}


def test_plans_info_openapi_and_the_printed_dashboard_url(gateway: Gateway) -> None:
    plans = gateway.admin("GET", "/api/v1/admin/plans").json()
    assert {p["name"] for p in plans["plans"]} >= {"free", "pro"}
    assert plans["prices"] == {"publish": 1, "queue_send": 1, "delivery": 1}
    assert httpx.get(gateway.base_url + "/api/v1/admin/plans").status_code == 401
    info = httpx.get(gateway.base_url + "/api/v1/info").json()
    assert info["mqtt_port"] == gateway.mqtt_port
    paths = httpx.get(gateway.base_url + "/openapi.json").json()["paths"]
    for path in (
        "/api/v1/usage/history",
        "/api/v1/admin/users/{user_id}/usage/history",
        "/api/v1/admin/stats",
        "/api/v1/admin/plans",
        "/api/v1/info",
    ):
        assert "get" in paths[path], path
    assert f"Flow-Gate dashboard: http://127.0.0.1:{gateway.http_port}/\n" in "".join(gateway.log)
