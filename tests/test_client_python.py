"""The Python SDK (clients/python, ``flowgate_client``) against real gateways and a real nats-server.

One NATS and two gateways on it for the module: ``gw`` serves the clients under test,
``peer`` publishes while ``gw`` is down, so a resumed subscription must fetch what it missed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from flowgate_client import (
    NO_RETRY,
    AdminClient,
    Client,
    Forbidden,
    Gap,
    Message,
    NotFound,
    PaymentRequired,
    RateLimited,
    Reconnect,
    Retry,
    Token,
    Unauthorized,
    Unavailable,
)
from flowgate_client import sync as flowgate_sync

from tests.harness import ROOT, Gateway, NatsServer, temp_dir

FAST = Reconnect(delay=0.05, max_delay=0.5)
PATIENT = Retry(max_retries=40, delay=0.1, max_delay=0.5)
RETENTION_BYTES = 1024 * 1024


@dataclass
class Env:
    nats: NatsServer
    gw: Gateway
    peer: Gateway


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    nats = NatsServer(temp_dir("fg-sdk-nats-")).start()
    small = {"FLOWGATE_RETENTION_BYTES": str(RETENTION_BYTES)}  # so that a test can outgrow it and see a gap
    gw = Gateway(nats.url, temp_dir("fg-sdk-gw-"), env=small)
    peer = Gateway(nats.url, temp_dir("fg-sdk-peer-"), admin_key=gw.admin_key, secret_key=gw.secret_key, env=small)
    with ThreadPoolExecutor(2) as pool:  # start both at once
        list(pool.map(Gateway.start, (gw, peer)))
    yield Env(nats, gw, peer)
    for g in (gw, peer):
        g.stop()
        shutil.rmtree(g.data_dir, ignore_errors=True)
    nats.stop()
    shutil.rmtree(nats.store, ignore_errors=True)


@pytest.fixture
async def user(env: Env) -> tuple[str, str]:
    return env.gw.new_user()


@pytest.fixture
async def client(env: Env, user: tuple[str, str]) -> AsyncIterator[Client]:
    async with Client(env.gw.base_url, api_key=user[1], app="app", reconnect=FAST) as c:
        yield c


async def take(sub: AsyncIterable[Message], count: int, timeout: float = 10) -> list[Message]:
    out: list[Message] = []

    async def run() -> None:
        async for msg in sub:
            out.append(msg)
            if len(out) == count:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_publish_and_subscribe_keep_types_and_overlapping_filters_deliver_once(client: Client) -> None:
    token = await client.token()
    assert isinstance(token, Token) and token.app == "app" and token.topic_prefix.endswith("_app_")
    async with client.subscribe("s/+", "s/#", token.topic_prefix + "other") as sub:
        first = await client.publish("s/a", "hello")
        second = await client.publish("s/b", {"t": 21.5})
        third = await client.publish("other", [1, 2])
        assert first < second < third
        got = await take(sub, 3)
    assert [(m.topic, m.data, m.seq) for m in got] == [
        ("s/a", "hello", first),
        ("s/b", {"t": 21.5}, second),
        ("other", [1, 2], third),
    ]
    assert all(m.published_at is not None for m in got)


async def test_idempotency_key_and_since_replay(client: Client) -> None:
    once = await client.publish_result("idem", "x", idempotency_key="k-1")
    again = await client.publish_result("idem", "x", idempotency_key="k-1")
    assert again.seq == once.seq and again.duplicate and not once.duplicate
    after = await client.publish("idem", "y")
    async with client.subscribe("idem", since=once.seq - 1) as sub:
        assert [m.data for m in await take(sub, 2)] == ["x", "y"]
        assert sub.last_seq == after


async def test_typed_errors_401_403_402_and_429_with_retry_after(env: Env, user: tuple[str, str]) -> None:
    gw = env.gw
    async with Client(gw.base_url, api_key="fgk_nope_nope", app="app") as bad:
        with pytest.raises(Unauthorized) as unauthorized:
            await bad.publish("t", "x")
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"

    async def forged() -> str:
        return "not.a.jwt"

    async with Client(gw.base_url, get_token=forged, reconnect=FAST) as bad:
        with pytest.raises(Unauthorized):  # closed with 4401, and again with a new token: given up
            async with bad.subscribe("t"):
                pass

    narrow = {"publish": {"allow": ["ok/#"]}, "subscribe": {"allow": ["ok/#"]}}
    async with Client(gw.base_url, api_key=user[1], app="app", permissions=narrow) as c:
        await c.publish("ok/1", "x")
        with pytest.raises(Forbidden):
            await c.publish("no", "x")
        with pytest.raises(Forbidden):
            async with c.subscribe("no/#"):
                pass

    gw.admin("PATCH", f"/api/v1/admin/users/{user[0]}", json={"limits": {"quota": 2}})
    async with Client(gw.base_url, api_key=user[1], app="quota") as c:
        with pytest.raises(PaymentRequired) as payment:
            for i in range(10):
                await c.publish("q", i)
    assert payment.value.limit == "monthly_quota" and payment.value.quota == 2 and payment.value.resets_at

    user_id, _ = gw.new_user()
    key = gw.admin("POST", f"/api/v1/admin/users/{user_id}/keys", json={"name": "slow", "rate_limit": {"rate": 1}})
    slow_key = key.json()["key"]
    async with Client(gw.base_url, api_key=slow_key, app="app", retry=None) as c:
        await c.publish("r", 1)
        with pytest.raises(RateLimited) as limited:
            await c.publish("r", 2)
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 2
    async with Client(gw.base_url, api_key=slow_key, app="app", retry=Retry(max_retries=3, delay=0.01)) as c:
        await c.publish("r", 3)  # spends the bucket
        started = time.monotonic()
        await c.publish("r", 4)  # 429 first, then after Retry-After: stored
        waited = time.monotonic() - started
    assert waited >= 0.5, f"retried after {waited:.2f}s, before the Retry-After"


async def test_token_refresh_on_a_live_subscription_with_a_five_second_token(env: Env, user: tuple[str, str]) -> None:
    issued: list[Token] = []

    async def get_token() -> Token:
        async with httpx.AsyncClient() as http:
            answer = await http.post(env.gw.base_url + "/token", json={"app": "app", "ttl": 5, "api_key": user[1]})
        issued.append(Token.from_json(answer.json()))
        return issued[-1]

    async with Client(env.gw.base_url, get_token=get_token, reconnect=FAST) as c, c.subscribe("live") as sub:
        first = await c.publish("live", 0)
        assert [m.seq for m in await take(sub, 1)] == [first]
        deadline = time.monotonic() + 15
        while issued[-1].expires_at <= issued[0].expires_at + 5:  # two refreshes: past the first token's expiry
            assert time.monotonic() < deadline, "the token was not refreshed"
            await asyncio.sleep(0.2)
        assert time.time() > issued[0].expires_at
        later = await c.publish("live", 1)
        assert [m.seq for m in await take(sub, 1)] == [later]
        assert sub.connections == 1, "refreshed with auth on the open socket, not by reconnecting"


async def test_queues_end_to_end(client: Client) -> None:
    q = client.queue("orders")
    created = await q.create(visibility_timeout=30)
    assert created["attributes"]["visibility_timeout"] == 30
    await q.send("one", attributes={"kind": "a"})
    batch = await q.send_batch(["two", {"id": "x", "body": "three"}])
    assert len(batch["successful"]) == 2 and not batch["failed"]
    bodies: dict[str, int] = {}
    released = False
    async for m in q.messages(wait=2):
        if m.body == "one":
            assert m.attributes == {"kind": "a"}
        if m.body == "two" and not released:
            released = True
            await m.release()  # visible again now, received a second time
            continue
        bodies[m.body] = m.receive_count
        await m.delete()
        if len(bodies) == 3:
            break
    assert bodies == {"one": 1, "two": 2, "three": 1}
    assert {"name": "orders"}.items() <= next(x for x in await client.queues() if x["name"] == "orders").items()
    await q.send("four")
    await q.purge()
    assert await q.receive() == []  # at once, after a purge that follows deletes
    assert (await q.attributes())["approximate_visible"] == 0
    await q.delete()
    with pytest.raises(NotFound):
        await q.attributes()


async def test_usage_keys_and_admin(env: Env, client: Client) -> None:
    await client.publish("u", 1)
    usage = await client.usage()
    assert usage["used"] >= 1
    key = await client.create_key("extra")
    assert key["key"].startswith("fgk_")
    assert key["id"] in [k["id"] for k in await client.keys()]
    await client.delete_key(key["id"])
    async with AdminClient(env.gw.base_url, env.gw.admin_key) as admin:
        created = await admin.create_user("sdk-admin-user")
        assert created["user_id"] == "sdk-admin-user"
        assert "sdk-admin-user" in [u["user_id"] for u in await admin.users()]
        new_key = await admin.create_key("sdk-admin-user", "ci")
        assert [k["id"] for k in await admin.keys("sdk-admin-user")] == [new_key["id"]]
        plans = await admin.plans()
        assert [p["name"] for p in plans["plans"]] == ["free", "pro"] and plans["prices"]["publish"] == 1
        assert (await admin.add_credits("sdk-admin-user", 50))["balance"] == 50
        assert (await admin.update_user("sdk-admin-user", plan="pro"))["plan"] == "pro"
        assert (await admin.usage("sdk-admin-user"))["balance"] == 50
        await admin.delete_user("sdk-admin-user")
        with pytest.raises(NotFound):
            await admin.user("sdk-admin-user")
    async with AdminClient(env.gw.base_url, "wrong") as admin:
        with pytest.raises(Unauthorized):
            await admin.users()


async def test_a_resume_beyond_retention_reports_the_gap(client: Client) -> None:
    first = await client.publish("big", "x" * 200_000)
    for _ in range(6):  # 1.2 MB: the oldest messages of the 1 MiB stream go
        last = await client.publish("big", "x" * 200_000)
    gaps: list[Gap] = []
    async with client.subscribe("big", since=first - 1, on_gap=gaps.append) as sub:
        events = sub.events()
        gap = await asyncio.wait_for(anext(events), 10)
        assert isinstance(gap, Gap) and gap.requested_seq == first and gap.first_available_seq > first
        rest = [await asyncio.wait_for(anext(events), 10) for _ in range(last - gap.first_available_seq + 1)]
    assert gaps == [gap]
    assert [m.seq for m in rest if isinstance(m, Message)] == list(range(gap.first_available_seq, last + 1))


def test_sync_facade(env: Env) -> None:
    _, key = env.gw.new_user()
    with flowgate_sync.Client(env.gw.base_url, api_key=key, app="app") as c:
        seqs = [c.publish("sync", n) for n in range(3)]
        assert [m.data for m in c.subscribe("sync", since=0, count=3)] == [0, 1, 2]
        assert [m.seq for m in c.subscribe("sync", since=seqs[0], count=2)] == seqs[1:]


JS_PUBLISH_ONCE = f"""
import {{ Client }} from "{(ROOT / "clients" / "js" / "flowgate.js").as_uri()}";
const [url, apiKey] = process.argv.slice(1);
const answer = await new Client(url, {{ apiKey, app: "app", retry: null }}).publish("restart/x", "lost").catch((e) => e);
console.log(answer.name, answer.status);
"""


@pytest.fixture
async def follower(env: Env, user: tuple[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """The JavaScript client following the restart test's topics on Node, one JSON line per message."""
    follower = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "clients" / "js" / "examples" / "follow.js"),
        env.gw.base_url,
        "app",
        "restart/+",
        "restart/#",
        "--count",
        "31",
        env={**os.environ, "FLOWGATE_API_KEY": user[1]},
        stdout=asyncio.subprocess.PIPE,
    )
    yield follower
    if follower.returncode is None:
        follower.kill()
        await follower.wait()


@pytest.fixture
async def cli_follower(env: Env, user: tuple[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """``flowgate sub`` following the restart test's topics from after a marker message (so it needs no ready line)."""
    async with Client(env.gw.base_url, api_key=user[1], app="app") as c:
        marker = await c.publish("marker", "before the restart test")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE_")}
    environment.update(FLOWGATE_URL=env.gw.base_url, FLOWGATE_API_KEY=user[1], FLOWGATE_APP="app")
    flowgate = str(Path(sys.executable).parent / "flowgate")
    command = [flowgate, "sub", "restart/+", "restart/#", "--since", str(marker), "--count", "31", "--json"]
    process = await asyncio.create_subprocess_exec(*command, env=environment, stdout=asyncio.subprocess.PIPE)
    yield process
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_subscription_survives_a_gateway_restart_and_a_nats_restart(
    env: Env,
    user: tuple[str, str],
    follower: asyncio.subprocess.Process,
    cli_follower: asyncio.subprocess.Process,
) -> None:
    """Nothing lost or repeated: messages published while the gateway or NATS was down arrive once, in order.

    The JavaScript client (clients/js/examples/follow.js, on Node) and ``flowgate sub`` follow the same topics
    through the same restarts beside the Python client."""
    gaps: list[Gap] = []
    assert follower.stdout is not None
    assert json.loads(await asyncio.wait_for(follower.stdout.readline(), 15)) == {"ready": True}
    async with (
        Client(env.gw.base_url, api_key=user[1], app="app", reconnect=FAST) as c,
        Client(env.peer.base_url, api_key=user[1], app="app", retry=PATIENT) as publisher,
        c.subscribe("restart/+", "restart/#", on_gap=gaps.append) as sub,
    ):
        sent: list[int] = []

        async def publish(count: int) -> None:
            for _ in range(count):
                sent.append(await publisher.publish(f"restart/{len(sent) % 3}", len(sent)))

        await publish(10)
        received = await take(sub, 10)
        assert cli_follower.stdout is not None  # connected (it gives up on a gateway it never reached): its first 10
        printed = [json.loads(await asyncio.wait_for(cli_follower.stdout.readline(), 20)) for _ in range(10)]
        await asyncio.to_thread(env.gw.stop)
        await publish(10)  # through the peer while the subscriber's gateway is down
        await asyncio.to_thread(env.gw.start)
        received += await take(sub, 10)
        assert sub.connections == 2

        await asyncio.to_thread(env.nats.stop)
        async with Client(env.peer.base_url, api_key=user[1], app="app", retry=NO_RETRY) as impatient:
            with pytest.raises(Unavailable):
                await impatient.publish("restart/x", "lost")
        js_probe = await asyncio.create_subprocess_exec(
            "node",
            "--input-type=module",
            "-e",
            JS_PUBLISH_ONCE,
            env.peer.base_url,
            user[1],
            stdout=asyncio.subprocess.PIPE,
        )
        assert (await js_probe.communicate())[0].decode().split() == ["Unavailable", "503"]
        await asyncio.to_thread(env.nats.start)
        await publish(10)  # retried until the peer is connected again
        received += await take(sub, 10, timeout=20)
        await publish(1)
        received += await take(sub, 1)
    assert [m.data for m in received] == list(range(31))
    assert [m.seq for m in received] == sent
    assert not gaps
    assert cli_follower.stdout is not None
    printed += [json.loads(line) for line in (await asyncio.wait_for(cli_follower.stdout.read(), 20)).splitlines()]
    assert await cli_follower.wait() == 0
    assert [(m["data"], m["seq"]) for m in printed] == list(zip(range(31), sent, strict=True))
    lines = [json.loads(line) for line in (await asyncio.wait_for(follower.stdout.read(), 20)).splitlines()]
    assert await follower.wait() == 0
    assert [line["data"] for line in lines[:-1]] == list(range(31))
    assert [line["seq"] for line in lines[:-1]] == sent
    assert lines[-1]["connections"] >= 2
