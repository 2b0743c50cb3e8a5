"""Incoming triggers: real GitHub, Stripe and Standard Webhooks signatures, wrong and replayed ones, on the real gateway."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import standardwebhooks

from tests.billing_env import billing_gateway
from tests.harness import Gateway, NatsServer
from tests.sse_client import collect


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_trigger(http: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    answer = await http.post("/api/v1/triggers", json=body, headers=auth(token))
    assert answer.status_code == 201, answer.text
    created = dict(answer.json())
    assert created["url"].endswith(f"/hooks/{created['id']}") and len(created["id"]) > 30
    return created


async def stored(gw: Gateway, http: httpx.AsyncClient, token: str, topic: str) -> list[Any]:
    """Every message on ``topic`` so far, read back over SSE up to a sentinel published now."""
    sentinel = await http.post("/api/v1/publish", json={"topic": topic, "message": "END"}, headers=auth(token))
    params = {"topic": topic, "token": token, "last_event_id": "0"}
    async with http.stream("GET", "/api/v1/subscribe", params=params) as stream:
        events: list[Any] = []
        while not events or events[-1]["seq"] != sentinel.json()["seq"]:
            events += [e.json() for e in await collect(stream, 1)]
    return [e.get("data") if "encoding" not in e else ("base64", e["data"]) for e in events[:-1]]


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def stripe_signature(secret: str, body: bytes, at: int) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


async def test_unverified_trigger_keeps_json_text_and_binary(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        trigger = await new_trigger(http, token, topic="in/plain")
        url = f"/hooks/{trigger['id']}"
        answer = await http.post(url, json={"order": 1})
        assert answer.status_code == 200 and answer.json()["topic"] == "in/plain" and answer.json()["seq"] > 0
        assert (await http.post(url, content=b"hello", headers={"Content-Type": "text/plain"})).status_code == 200
        raw = bytes([0, 255, 1])
        assert (
            await http.post(url, content=raw, headers={"Content-Type": "application/octet-stream"})
        ).status_code == 200
        bad = await http.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
        assert (await http.post("/hooks/tr_" + "x" * 32, json={})).status_code == 404
        assert await stored(gateway, http, token, "in/plain") == [
            {"order": 1},
            "hello",
            ("base64", base64.b64encode(raw).decode()),
        ]
        listed = (await http.get("/api/v1/triggers", headers=auth(token))).json()["triggers"]
        assert [t["id"] for t in listed] == [trigger["id"]] and "secret" not in listed[0]
        assert (await http.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth(token))).status_code == 204
        assert (await http.post(url, json={})).status_code == 404


async def test_bad_trigger_definitions_get_400(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10, headers=auth(token)) as http:
        for body in (
            {},
            {"topic": "a/#"},
            {"topic": "a", "verify": "md5"},
            {"topic": "a", "verify": "none", "secret": "x" * 20},
            {"topic": "a", "verify": "standard-webhooks", "secret": "whsec_!!"},
        ):
            answer = await http.post("/api/v1/triggers", json=body)
            assert answer.status_code == 400, (body, answer.text)
        assert (
            await http.post("/api/v1/triggers", json={"topic": "a"}, headers={"Authorization": ""})
        ).status_code == 401


async def test_github_signatures(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        trigger = await new_trigger(http, token, topic="gh", verify="github", secret="gh-secret-123")
        url = f"/hooks/{trigger['id']}"
        body = orjson.dumps({"action": "opened", "number": 7})
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-1"}
        good = await http.post(
            url, content=body, headers={**headers, "X-Hub-Signature-256": github_signature("gh-secret-123", body)}
        )
        assert good.status_code == 200 and good.json()["duplicate"] is False
        wrong = await http.post(
            url, content=body, headers={**headers, "X-Hub-Signature-256": github_signature("other", body)}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        tampered = body.replace(b"7", b"8")
        sig = github_signature("gh-secret-123", body)
        assert (
            await http.post(url, content=tampered, headers={**headers, "X-Hub-Signature-256": sig})
        ).status_code == 401
        assert (await http.post(url, content=body, headers=headers)).status_code == 401  # unsigned
        replay = await http.post(url, content=body, headers={**headers, "X-Hub-Signature-256": sig})
        assert replay.status_code == 200 and replay.json()["duplicate"] is True  # same delivery: stored once
        assert await stored(gateway, http, token, "gh") == [{"action": "opened", "number": 7}]


async def test_stripe_signatures_with_tolerance(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    secret = "whsec_stripe_test_secret"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        trigger = await new_trigger(http, token, topic="pay", verify="stripe", secret=secret)
        url = f"/hooks/{trigger['id']}"
        body = orjson.dumps({"id": "evt_1", "type": "charge.succeeded"})
        now = int(time.time())
        headers = {"Content-Type": "application/json"}
        good = await http.post(
            url, content=body, headers={**headers, "Stripe-Signature": stripe_signature(secret, body, now)}
        )
        assert good.status_code == 200, good.text
        stale = stripe_signature(secret, body, now - 600)  # a valid signature from 10 minutes ago: replayed
        assert (await http.post(url, content=body, headers={**headers, "Stripe-Signature": stale})).status_code == 401
        wrong = stripe_signature("whsec_wrong", body, now)
        assert (await http.post(url, content=body, headers={**headers, "Stripe-Signature": wrong})).status_code == 401
        garbage = await http.post(url, content=body, headers={**headers, "Stripe-Signature": "v1=abc"})
        assert garbage.status_code == 401
        again = await http.post(
            url, content=body, headers={**headers, "Stripe-Signature": stripe_signature(secret, body, now + 1)}
        )
        assert again.status_code == 200 and again.json()["duplicate"] is True  # the same event id
        assert await stored(gateway, http, token, "pay") == [{"id": "evt_1", "type": "charge.succeeded"}]


async def test_standard_webhooks_signatures(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        trigger = await new_trigger(http, token, topic="std", verify="standard-webhooks")
        assert trigger["secret"].startswith("whsec_")
        signer = standardwebhooks.Webhook(trigger["secret"])
        url = f"/hooks/{trigger['id']}"

        def signed(msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
            return {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signer.sign(msg_id, at, body),
                "Content-Type": "text/plain",
            }

        now = datetime.now(UTC)
        assert (await http.post(url, content=b"one", headers=signed("m1", b"one", now))).status_code == 200
        assert (await http.post(url, content=b"two", headers=signed("m1", b"one", now))).status_code == 401
        old = signed("m2", b"two", now - timedelta(minutes=10))  # replayed long after
        assert (await http.post(url, content=b"two", headers=old)).status_code == 401
        other = standardwebhooks.Webhook("whsec_" + base64.b64encode(b"k" * 24).decode())
        forged = {**signed("m3", b"three", now), "webhook-signature": other.sign("m3", now, b"three")}
        assert (await http.post(url, content=b"three", headers=forged)).status_code == 401
        replay = await http.post(url, content=b"one", headers=signed("m1", b"one", now))
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        assert await stored(gateway, http, token, "std") == ["one"]
        usage = (await http.get("/api/v1/usage", headers=auth(token))).json()
        assert usage["app_usage"]["publish"] >= 2  # the trigger's message (and the sentinel) billed to the owner


async def test_the_owners_rate_limit_applies(nats_server: NatsServer) -> None:
    with billing_gateway(nats_server.url, "fg-trigger-billing-") as gw:
        _, key = await asyncio.to_thread(gw.new_user, None, "slow")  # burst 5, then 1 per 20 s
        token = await asyncio.to_thread(gw.token, key)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
            trigger = await new_trigger(http, token, topic="limited")
            codes = [(await http.post(f"/hooks/{trigger['id']}", json={"n": n})).status_code for n in range(8)]
            assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
            refused = await http.post(f"/hooks/{trigger['id']}", json={"n": 9})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
