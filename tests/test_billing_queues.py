"""The billing guard on the queue API: 402 on send, 429 beyond the rate, refused sends are not stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.billing_env import billing_gateway
from tests.harness import Gateway, NatsServer
from tests.queue_client import QueueClient


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    with billing_gateway(nats_server.url, "fg-billing-q-") as gateway:
        yield gateway


def drain(client: QueueClient, queue: str) -> list[object]:
    bodies: list[object] = []
    while batch := client.receive_ok(queue, max=10):
        bodies += [m["body"] for m in batch]
    return bodies


def test_the_send_crossing_the_quota_gets_402_and_a_top_up_restores(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    client = QueueClient(gw.base_url, gw.token(key))
    try:
        codes = [client.send("jobs", f"m{i}").status_code for i in range(22)]
        assert codes == [200] * 20 + [402] * 2
        error = client.send("jobs", "refused").json()["error"]
        assert (error["code"], error["limit"], error["used"], error["quota"]) == (
            "payment_required",
            "monthly_quota",
            20,
            20,
        )
        assert gw.admin("POST", f"/api/v1/admin/users/{user_id}/credits", json={"amount": 10}).status_code == 200
        client.send_ok("jobs", "after")
        assert sorted(drain(client, "jobs"), key=str) == sorted([f"m{i}" for i in range(20)] + ["after"], key=str)
        usage = client.http.get("/api/v1/usage").json()
        assert usage["app_usage"]["queue_send"] == 21 and usage["balance"] == 9
    finally:
        client.close()


def test_a_batch_is_refused_per_entry(gw: Gateway) -> None:
    user_id, key = gw.new_user(plan="tiny")
    gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 3}})
    client = QueueClient(gw.base_url, gw.token(key))
    try:
        entries = [{"id": f"e{i}", "body": f"b{i}"} for i in range(5)]
        answer = client.http.post("/api/v1/queues/batched/messages/batch", json={"entries": entries}).json()
        assert len(answer["successful"]) == 3
        assert [f["status"] for f in answer["failed"]] == [402, 402]
        stored = {e["id"] for e in answer["successful"]}
        assert sorted(drain(client, "batched"), key=str) == sorted(f"b{e[1:]}" for e in stored)
    finally:
        client.close()


def test_a_burst_of_sends_gets_429_with_headers(gw: Gateway) -> None:
    _, key = gw.new_user(plan="slow")  # burst 5
    client = QueueClient(gw.base_url, gw.token(key))
    try:
        answers = [client.send("jobs", f"m{i}") for i in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        assert answers[5].headers["RateLimit-Limit"] == "5" and int(answers[5].headers["Retry-After"]) >= 1
        assert sorted(drain(client, "jobs"), key=str) == [f"m{i}" for i in range(5)]
    finally:
        client.close()
