"""Outgoing webhooks against a real receiver: retries, order, signatures, two replicas, kill -9, dead letters."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import psutil
import pytest
import standardwebhooks

from gateway.errors import BadRequest, Forbidden
from gateway.webhooks.targets import check_target
from tests.harness import Gateway, replicas_on_own_nats
from tests.webhook_receiver import Answer, Receiver, Request

ENV = {
    "FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "true",
    "FLOWGATE_WEBHOOK_TIMEOUT": "2.0",
    "FLOWGATE_WEBHOOK_RETRY_BASE": "0.05",
    "FLOWGATE_WEBHOOK_RETRY_MAX": "0.4",
    "FLOWGATE_WEBHOOK_SYNC_INTERVAL": "0.2",
}


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Gateway]]:
    with replicas_on_own_nats("fg-wh-", ENV) as gateways:
        yield gateways


@pytest.fixture(scope="module")
def token(replicas: list[Gateway]) -> str:
    return replicas[0].user_token()[1]


@pytest.fixture
async def receiver() -> Any:
    server = await Receiver().start()
    yield server
    await server.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(gw: Gateway, token: str, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(gw.base_url + "/api/v1/webhooks", json=body, headers=auth(token))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def publish(gw: Gateway, token: str, topic: str, messages: list[Any]) -> list[int]:
    seqs = []
    async with httpx.AsyncClient(base_url=gw.base_url, headers=auth(token), timeout=10) as http:
        for message in messages:
            answer = await http.post("/api/v1/publish", json={"topic": topic, "message": message})
            assert answer.status_code == 200, answer.text
            seqs.append(answer.json()["seq"])
    return seqs


async def both_fetching(gw: Gateway, webhook_id: str) -> None:
    """Wait until both replicas wait on the webhook's consumer (the other one starts it within a sync interval)."""
    assert gw.nats_url is not None
    nc = await nats.connect(gw.nats_url)
    try:
        async with asyncio.timeout(15):
            while (await nc.jetstream().consumer_info("FG_MESSAGES", f"fgwh_{webhook_id}")).num_waiting < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the state lives in nats-server
    finally:
        await nc.close()


def first_seen(requests: list[Request]) -> list[int]:
    """The message seqs in the order they first arrived."""
    order: list[int] = []
    for request in requests:
        seq = request.json["seq"]
        if seq not in order:
            order.append(seq)
    return order


def verify_all(secret: str, requests: list[Request]) -> None:
    checker = standardwebhooks.Webhook(secret)
    for request in requests:
        checker.verify(request.body, request.headers)  # raises on a bad signature or stale timestamp


async def test_urls_to_private_addresses_are_refused_unless_allowed() -> None:
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://10.1.2.3/", "http://[::1]/"):
        with pytest.raises(Forbidden):
            await check_target(url, allow_private=False)
        await check_target(url, allow_private=True)
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "not a url", "http:///nohost"):
        with pytest.raises(BadRequest):
            await check_target(url, allow_private=True)


async def test_bad_webhook_definitions_get_400_and_others_404(replicas: list[Gateway], token: str) -> None:
    gw = replicas[0]
    async with httpx.AsyncClient(base_url=gw.base_url, headers=auth(token), timeout=10) as http:
        for body in (
            {"url": "http://127.0.0.1:1/"},
            {"url": "gopher://x", "filter": "a"},
            {"url": "http://127.0.0.1:1/", "filter": "a/#/b"},
        ):
            answer = await http.post("/api/v1/webhooks", json=body)
            assert answer.status_code == 400, answer.text
        answer = await http.post("/api/v1/webhooks", content=b"{nope")
        assert answer.status_code == 400
        assert (await http.get("/api/v1/webhooks/wh_doesnotexist")).status_code == 404
        hook = await create(gw, token, url="http://127.0.0.1:1/", filter="x")
    other = gw.user_token()[1]
    async with httpx.AsyncClient(base_url=gw.base_url, headers=auth(other), timeout=10) as http:
        assert (await http.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404  # another user's
        assert (await http.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 404


async def test_every_message_arrives_in_order_signed_through_failures_slowness_and_429(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    def flaky(request: Request, count: int) -> Answer:
        if count < 2:
            return Answer(500)  # the first attempts fail
        if count == 2:
            return Answer(200, delay=0.3)  # slow, within the timeout
        if count == 3:
            return Answer(429, {"Retry-After": "1"})
        return Answer(200)

    receiver.behaviours["/flaky"] = flaky
    hook = await create(replicas[0], token, url=receiver.url("/flaky"), filter="orders/#", headers={"X-Tenant": "t1"})
    assert hook["secret"].startswith("whsec_")
    seqs = await publish(replicas[0], token, "orders/eu", [{"n": i} for i in range(6)])
    seqs += await publish(replicas[1], token, "orders", ["text"])  # 'orders/#' matches 'orders' itself
    await publish(replicas[1], token, "other", ["not for this webhook"])
    seqs += await publish(replicas[1], token, "orders/us/ca", [[1, 2]])
    requests = receiver.requests.setdefault("/flaky", [])
    await receiver.wait_for(lambda: set(seqs) <= {r.json["seq"] for r in requests})
    assert first_seen(requests) == seqs
    verify_all(hook["secret"], requests)
    assert all(r.headers["x-tenant"] == "t1" for r in requests)
    assert requests[0].json["data"] == {"n": 0} and requests[0].json["topic"] == "orders/eu"
    by_seq = {r.json["seq"]: r.json for r in requests}
    assert by_seq[seqs[6]]["data"] == "text" and by_seq[seqs[7]]["data"] == [1, 2]
    assert requests[4].at - requests[3].at >= 0.9  # the 429's Retry-After: 1 was honoured

    def statuses(log: list[dict[str, Any]], seq: int) -> list[int]:  # each replica logs its own: by attempt
        return [e["status"] for e in sorted((e for e in log if e["seq"] == seq), key=lambda e: e["attempt"])]

    async with httpx.AsyncClient(base_url=replicas[1].base_url, headers=auth(token), timeout=10) as http:
        for _ in range(100):  # the log is written just after each attempt, by the replica that made it
            log = (await http.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            if len(log) >= len(seqs) + 3:  # three failed attempts and one success per message
                break
            await asyncio.sleep(0.05)
        metrics = (await http.get("/metrics")).text
    assert statuses(log, seqs[0]) == [500, 500, 200] and statuses(log, seqs[1]) == [429, 200]
    assert all(entry["outcome"] in ("retry", "delivered") for entry in log)
    assert "flowgate_webhook_attempts_total" in metrics


async def test_a_receiver_down_for_a_while_gets_everything_once_it_is_up(replicas: list[Gateway], token: str) -> None:
    later = Receiver()  # nothing listens on its port yet: connection refused
    hook = await create(replicas[1], token, url=later.url("/late"), filter="late/+")
    seqs = await publish(replicas[0], token, "late/x", list(range(5)))
    async with httpx.AsyncClient(base_url=replicas[0].base_url, headers=auth(token), timeout=10) as http:
        for _ in range(200):  # wait until some attempts failed
            log = (await http.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            if len(log) >= 3:
                break
            await asyncio.sleep(0.05)
    assert log and all(entry["status"] is None and entry["outcome"] == "retry" for entry in log)
    await later.start()
    try:
        requests = later.requests.setdefault("/late", [])
        await later.wait_for(lambda: len(requests) >= 5)
        assert first_seen(requests) == seqs
        verify_all(hook["secret"], requests)
    finally:
        await later.stop()


async def test_two_replicas_deliver_each_message_once_and_pause_resume(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    hook = await create(replicas[0], token, url=receiver.url("/both"), filter="both")
    await both_fetching(replicas[0], hook["id"])
    seqs = await publish(replicas[0], token, "both", list(range(30)))
    requests = receiver.requests.setdefault("/both", [])
    await receiver.wait_for(lambda: len(requests) >= 30)
    assert [r.json["seq"] for r in requests] == seqs  # each once, in order
    async with httpx.AsyncClient(base_url=replicas[1].base_url, headers=auth(token), timeout=10) as http:
        for _ in range(100):  # the delivery log is written just after each delivery
            log = (await http.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            if len(log) >= 30:
                break
            await asyncio.sleep(0.05)
        assert len({entry["replica"] for entry in log}) == 2  # both replicas took turns
        paused = await http.post(f"/api/v1/webhooks/{hook['id']}/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        more = await publish(replicas[0], token, "both", ["a", "b", "c"])
        resumed = await http.post(f"/api/v1/webhooks/{hook['id']}/resume")
        assert resumed.json()["paused"] is False
        await receiver.wait_for(lambda: len(requests) >= 33)
        assert [r.json["seq"] for r in requests] == seqs + more
        assert (await http.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await http.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404


async def test_a_hanging_endpoint_slows_neither_publishing_nor_other_webhooks(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    never = asyncio.Event()
    receiver.behaviours["/hang"] = lambda _r, _n: Answer(200, hold=never)  # answers after the timeout, if ever
    await create(replicas[0], token, url=receiver.url("/hang"), filter="hang")
    await create(replicas[0], token, url=receiver.url("/fine"), filter="fine")
    try:
        await publish(replicas[0], token, "hang", ["stuck"])
        hanging = receiver.requests.setdefault("/hang", [])
        await receiver.wait_for(lambda: len(hanging) >= 1)
        started = time.monotonic()
        await publish(replicas[0], token, "hang", list(range(20)))  # stored while its webhook hangs
        seqs = await publish(replicas[0], token, "fine", list(range(5)))
        fine = receiver.requests.setdefault("/fine", [])
        await receiver.wait_for(lambda: len(fine) >= 5)
        assert [r.json["seq"] for r in fine] == seqs
        assert time.monotonic() - started < 1.8  # all before the hanging request timed out (2 s)
    finally:
        never.set()


async def test_batches_keep_the_order_across_replicas_and_retries(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    receiver.behaviours["/batch"] = lambda _r, count: Answer(500 if count == 0 else 200)
    hook = await create(
        replicas[1], token, url=receiver.url("/batch"), filter="batched", batch={"max_messages": 4, "max_wait_ms": 100}
    )
    assert hook["batch"] == {"max_messages": 4, "max_wait_ms": 100}
    seqs = await publish(replicas[0], token, "batched", list(range(10)))
    requests = receiver.requests.setdefault("/batch", [])

    def delivered() -> list[int]:
        return [m["seq"] for r in requests[1:] for m in r.json["messages"]]

    await receiver.wait_for(lambda: set(seqs) <= set(delivered()))
    verify_all(hook["secret"], requests)
    assert all(r.json["type"] == "batch" and 1 <= len(r.json["messages"]) <= 4 for r in requests)
    assert delivered() == seqs  # after the failed first request: each once, in order
    assert requests[1].json["messages"][0]["seq"] == seqs[0]  # the failed batch came again first
    assert requests[1].headers["webhook-id"] == requests[1].json["id"]


async def test_expired_messages_go_to_the_dead_letter_queue(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    receiver.behaviours["/dead"] = lambda _r, _n: Answer(500)
    hook = await create(replicas[0], token, url=receiver.url("/dead"), filter="dead", max_age_seconds=0.5)
    seqs = await publish(replicas[0], token, "dead", ["x", "y"])
    queue = hook["dead_letter_queue"]
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=replicas[1].base_url, headers=auth(token), timeout=20) as http:
        while len(got) < 2:
            answer = await http.get(f"/api/v1/queues/{queue}/messages", params={"max": 10, "wait": 5})
            assert answer.status_code in (200, 404), answer.text
            if answer.status_code == 404:  # created with the first dead letter
                await receiver.wait_for(lambda: len(receiver.requests.get("/dead", [])) >= 2)
                continue
            got += [m["body"] for m in answer.json()["messages"]]
    assert [m["message"]["seq"] for m in got] == seqs
    assert got[0]["webhook_id"] == hook["id"] and got[0]["last_error"] == "HTTP 500"
    assert got[0]["message"]["data"] == "x"


async def test_a_replica_killed_mid_delivery_loses_nothing(
    replicas: list[Gateway], token: str, receiver: Receiver
) -> None:
    release = asyncio.Event()

    def hold_third(_request: Request, count: int) -> Answer:
        return Answer(200, hold=release) if count == 2 else Answer(200)

    receiver.behaviours["/kill"] = hold_third
    hook = await create(replicas[0], token, url=receiver.url("/kill"), filter="kill")
    seqs = await publish(replicas[0], token, "kill", list(range(8)))
    requests = receiver.requests.setdefault("/kill", [])
    await receiver.wait_for(lambda: len(requests) >= 3)
    port = requests[2].client_port
    victim = next(
        gw
        for gw in replicas
        if any(
            c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == receiver.port
            for c in psutil.Process(gw.pid).net_connections("tcp")
        )
    )
    victim.stop(signal.SIGKILL)  # holding message 3, unacknowledged
    release.set()
    survivor = next(gw for gw in replicas if gw is not victim)
    try:
        await receiver.wait_for(lambda: set(seqs) <= {r.json["seq"] for r in requests}, timeout=40)
    except TimeoutError:
        raise AssertionError("not redelivered; the survivor's log:\n" + "".join(survivor.log[-40:])) from None
    assert first_seen(requests) == seqs
    verify_all(hook["secret"], requests)  # (the module's last test: the victim stays down)
