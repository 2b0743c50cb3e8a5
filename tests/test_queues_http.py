"""Queue behaviours through the real gateway on a real nats-server: one test per behaviour.

Visibility timeouts are 1-2 s; waiting for them is done with long polls, so a
test waits only as long as the timeout it checks.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.harness import Gateway
from tests.queue_client import QueueClient


@pytest.fixture
def client(gateway: Gateway) -> Iterator[QueueClient]:
    _, token = gateway.user_token()
    c = QueueClient(gateway.base_url, token)
    yield c
    c.close()


def qname() -> str:
    return "q-" + secrets.token_hex(4)


# -- send, receive, delete -------------------------------------------------------------------------


def test_send_creates_queue_and_receive_returns_message(client: QueueClient) -> None:
    q = qname()
    sent = client.send_ok(q, "Your message content", attributes={"kind": "greeting"})
    assert set(sent) == {"message_id", "md5_of_body", "seq"}
    assert sent["md5_of_body"] == hashlib.md5(b"Your message content").hexdigest()
    [message] = client.receive_ok(q, max=10)
    assert message["message_id"] == sent["message_id"]
    assert message["body"] == "Your message content"
    assert message["md5_of_body"] == sent["md5_of_body"]
    assert message["attributes"] == {"kind": "greeting"}
    assert message["receive_count"] == 1
    assert message["sent_at"].endswith("Z")
    assert client.counts(q) == (0, 1, 0)
    assert client.delete(q, message["receipt_handle"]).status_code == 204
    assert client.counts(q) == (0, 0, 0)
    listed = client.http.get("/api/v1/queues").json()["queues"]
    assert q in [item["name"] for item in listed]


def test_json_body_round_trips(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, {"order": 42, "items": ["a", "b"]})
    [message] = client.receive_ok(q)
    assert message["body"] == {"order": 42, "items": ["a", "b"]}


def test_full_name_and_short_name_are_the_same_queue(gateway: Gateway) -> None:
    user_id, token = gateway.user_token(app="shop")
    client = QueueClient(gateway.base_url, token)
    q = qname()
    client.send_ok(f"{user_id}_shop_{q}", "x")
    [message] = client.receive_ok(q)
    assert message["body"] == "x"
    assert client.info(q)["queue"] == f"{user_id}_shop_{q}"


def test_batch_send_and_batch_delete_report_each_entry(client: QueueClient) -> None:
    q = qname()
    entries = [{"id": f"e{i}", "body": f"m{i}"} for i in range(9)] + [{"id": "bad", "body": ""}]
    answer = client.http.post(f"/api/v1/queues/{q}/messages/batch", json={"entries": entries}).json()
    assert sorted(item["id"] for item in answer["successful"]) == sorted(f"e{i}" for i in range(9))
    assert [(f["id"], f["status"]) for f in answer["failed"]] == [("bad", 400)]
    messages = client.receive_ok(q, max=10)
    while len(messages) < 9:
        messages += client.receive_ok(q, max=10, wait=1)
    assert sorted(m["body"] for m in messages) == sorted(f"m{i}" for i in range(9))
    deletes = [{"id": f"d{i}", "receipt_handle": m["receipt_handle"]} for i, m in enumerate(messages)]
    deletes.append({"id": "forged", "receipt_handle": "AAAA" + messages[0]["receipt_handle"][4:]})
    answer = client.http.post(f"/api/v1/queues/{q}/messages/batch-delete", json={"entries": deletes}).json()
    assert len(answer["successful"]) == 9
    assert [(f["id"], f["code"]) for f in answer["failed"]] == [("forged", "invalid_receipt_handle")]
    assert client.counts(q) == (0, 0, 0)


def test_receive_by_post_form(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "posted")
    answer = client.http.post(f"/api/v1/queues/{q}/messages/receive", json={"max": 5, "wait": 1})
    assert answer.status_code == 200, answer.text
    assert [m["body"] for m in answer.json()["messages"]] == ["posted"]


def test_deleted_means_gone_for_good(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, visibility_timeout=1).status_code == 201
    client.send_ok(q, "once")
    [message] = client.receive_ok(q)
    assert client.delete(q, message["receipt_handle"]).status_code == 204
    assert client.delete(q, message["receipt_handle"]).status_code == 204  # idempotent, like SQS
    assert client.receive_ok(q, wait=2) == []  # longer than the visibility timeout
    assert client.counts(q) == (0, 0, 0)


# -- visibility timeouts ---------------------------------------------------------------------------


def test_message_reappears_after_visibility_timeout_with_higher_receive_count(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, visibility_timeout=2).status_code == 201
    client.send_ok(q, "again")
    [first] = client.receive_ok(q)
    received_at = time.monotonic()
    assert client.receive_ok(q) == []  # invisible to others
    [second] = client.receive_ok(q, wait=5)
    assert time.monotonic() - received_at >= 1.5
    assert second["message_id"] == first["message_id"]
    assert second["receive_count"] == 2
    assert second["receipt_handle"] != first["receipt_handle"]


def test_changed_visibility_timeout_applies_to_later_receives(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "x")  # created with the default 30 s
    assert client.put(q, visibility_timeout=1).status_code == 200
    [first] = client.receive_ok(q)
    [second] = client.receive_ok(q, wait=5)
    assert (second["message_id"], second["receive_count"]) == (first["message_id"], 2)
    assert client.put(q, visibility_timeout=0).status_code == 200  # for later receives, like SQS
    [third] = client.receive_ok(q, wait=5)  # after the 1 s of the second receive
    assert third["receive_count"] == 3
    assert client.receive_ok(q)[0]["receive_count"] == 4  # visibility 0: visible again at once


def test_receive_visibility_timeout_overrides_the_queue_default(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "short")  # queue default: 30 s
    [first] = client.receive_ok(q, visibility_timeout=1)
    [second] = client.receive_ok(q, wait=5)
    assert (second["message_id"], second["receive_count"]) == (first["message_id"], 2)


def test_change_visibility_to_zero_makes_it_visible_now(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "now")
    [first] = client.receive_ok(q)
    assert client.visibility(q, first["receipt_handle"], 0).status_code == 204
    [second] = client.receive_ok(q)
    assert second["receive_count"] == 2


def test_change_visibility_extends_the_timeout(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, visibility_timeout=1).status_code == 201
    client.send_ok(q, "later")
    [first] = client.receive_ok(q)
    assert client.visibility(q, first["receipt_handle"], 3).status_code == 204
    assert client.receive_ok(q, wait=2) == []  # the original 1 s has passed, the new 3 s not
    [second] = client.receive_ok(q, wait=5)
    assert second["receive_count"] == 2


def test_stale_receipt_handle_is_refused_and_changes_nothing(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "held twice")
    [first] = client.receive_ok(q, visibility_timeout=1)
    [second] = client.receive_ok(q, wait=5)
    stale = client.delete(q, first["receipt_handle"])
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_receipt_handle"
    assert client.visibility(q, first["receipt_handle"], 0).status_code == 409
    assert client.counts(q) == (0, 1, 0)
    assert client.delete(q, second["receipt_handle"]).status_code == 204
    assert client.counts(q) == (0, 0, 0)


def test_receipt_handles_work_through_another_replica(gateway: Gateway, make_gateway: Callable[..., Gateway]) -> None:
    other = make_gateway(gateway.nats_url, secret_key=gateway.secret_key)
    _, token = gateway.user_token()
    a, b = QueueClient(gateway.base_url, token), QueueClient(other.base_url, token)
    q = qname()
    a.send_ok(q, "via a")
    [message] = b.receive_ok(q, wait=2)
    assert a.visibility(q, message["receipt_handle"], 5).status_code == 204
    assert b.delete(q, message["receipt_handle"]).status_code == 204
    assert a.counts(q) == (0, 0, 0)


def test_receive_count_ignores_deliveries_no_client_got(client: QueueClient) -> None:
    """A long poll whose client went away releases what it got, without counting a receive."""
    q = qname()
    assert client.put(q, visibility_timeout=30).status_code == 201
    gone = threading.Event()

    def impatient() -> None:
        try:
            client.http.get(f"/api/v1/queues/{q}/messages", params={"wait": 3}, timeout=0.5)
        except httpx.TimeoutException:
            gone.set()

    thread = threading.Thread(target=impatient)
    thread.start()
    thread.join()
    assert gone.is_set()
    client.send_ok(q, "for the patient")  # reaches the abandoned long poll
    [message] = client.receive_ok(q, wait=5)  # released at once, not after 30 s
    assert message["receive_count"] == 1


# -- delays and dead letters -----------------------------------------------------------------------


def test_delayed_message_is_invisible_until_its_delay(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "hidden")
    sent_at = time.monotonic()
    client.send_ok(q, "delayed", delay_seconds=2)
    assert client.counts(q) == (1, 0, 1)
    [visible] = client.receive_ok(q, max=10)
    assert visible["body"] == "hidden"
    [delayed] = client.receive_ok(q, wait=5)
    assert time.monotonic() - sent_at >= 1.5
    assert delayed["body"] == "delayed"
    assert delayed["receive_count"] == 1
    assert client.counts(q) == (0, 2, 0)


def test_queue_delay_applies_to_every_send(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, delay_seconds=1).status_code == 201
    client.send_ok(q, "x")
    assert client.receive_ok(q) == []
    [message] = client.receive_ok(q, wait=3)
    assert message["receive_count"] == 1


def test_dead_letter_queue_gets_message_exactly_once(client: QueueClient) -> None:
    q = qname()
    dlq = q + "-dlq"
    answer = client.put(q, visibility_timeout=1, redrive_policy={"dead_letter_queue": dlq, "max_receive_count": 2})
    assert answer.status_code == 201, answer.text
    sent = client.send_ok(q, "poison", attributes={"trace": "t1"})
    [first] = client.receive_ok(q)
    [second] = client.receive_ok(q, wait=5)
    assert [first["receive_count"], second["receive_count"]] == [1, 2]
    assert client.receive_ok(q, wait=3) == []  # the third receive moves it instead
    [dead] = client.receive_ok(dlq, max=10, visibility_timeout=60)
    assert (dead["message_id"], dead["body"], dead["attributes"]) == (sent["message_id"], "poison", {"trace": "t1"})
    assert dead["sent_at"] == first["sent_at"]
    assert dead["receive_count"] == 1
    assert client.counts(q) == (0, 0, 0)
    assert client.counts(dlq) == (0, 1, 0)
    assert client.delete(q, second["receipt_handle"]).status_code == 204  # gone already: nothing to do


# -- queue management ------------------------------------------------------------------------------


def test_attributes_can_be_set_and_read(client: QueueClient) -> None:
    q = qname()
    created = client.put(q, visibility_timeout=5, message_retention_seconds=3600, receive_wait_seconds=1)
    assert created.status_code == 201, created.text
    changed = client.put(q, max_message_bytes=2048)
    assert changed.status_code == 200
    assert client.put(q, message_retention_seconds=7200).status_code == 200  # the stream's max age follows
    assert client.put(q, message_retention_seconds=3600).status_code == 200
    attributes = client.info(q)["attributes"]
    assert attributes == {
        "visibility_timeout": 5,
        "message_retention_seconds": 3600,
        "delay_seconds": 0,
        "receive_wait_seconds": 1,
        "max_message_bytes": 2048,
        "redrive_policy": None,
    }


def test_receive_wait_seconds_is_the_default_long_poll(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, receive_wait_seconds=1).status_code == 201
    started = time.monotonic()
    assert client.receive_ok(q) == []
    assert time.monotonic() - started >= 0.9


def test_purge_removes_every_message(client: QueueClient) -> None:
    q = qname()
    for i in range(5):
        client.send_ok(q, f"m{i}")
    client.send_ok(q, "delayed", delay_seconds=60)
    held = client.receive_ok(q, max=2)
    assert len(held) == 2
    assert client.http.post(f"/api/v1/queues/{q}/purge").status_code == 204
    assert client.counts(q) == (0, 0, 0)
    assert client.receive_ok(q, visibility_timeout=0) == []


def test_delete_queue(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "doomed")
    assert client.http.delete(f"/api/v1/queues/{q}").status_code == 204
    assert client.http.get(f"/api/v1/queues/{q}").status_code == 404
    assert client.receive(q).status_code == 404
    client.send_ok(q, "reborn")  # a new, empty queue
    [message] = client.receive_ok(q)
    assert message["body"] == "reborn"


def test_permissions_govern_send_and_receive(gateway: Gateway) -> None:
    _, key = gateway.new_user()
    token = gateway.token(key, permissions={"publish": {"allow": ["jobs/#"]}, "subscribe": {"deny": ["secret"]}})
    client = QueueClient(gateway.base_url, token)
    assert client.send("jobs/new", "ok").status_code == 200
    assert client.send("other", "no").status_code == 403
    assert client.receive("secret").status_code == 403
    assert client.receive_ok("jobs/new")[0]["body"] == "ok"


# -- bad input: a clear 4xx and nothing changed ---------------------------------------------------------


def test_receive_from_unknown_queue_is_404_and_creates_nothing(client: QueueClient) -> None:
    q = qname()
    answer = client.receive(q)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "queue_not_found"
    assert q not in [item["name"] for item in client.http.get("/api/v1/queues").json()["queues"]]


def test_too_many_batch_entries(client: QueueClient) -> None:
    q = qname()
    client.send_ok(q, "existing")
    entries = [{"id": f"e{i}", "body": "x"} for i in range(11)]
    answer = client.http.post(f"/api/v1/queues/{q}/messages/batch", json={"entries": entries})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "too_many_entries"
    duplicate = client.http.post(
        f"/api/v1/queues/{q}/messages/batch", json={"entries": [{"id": "a", "body": "1"}, {"id": "a", "body": "2"}]}
    )
    assert duplicate.status_code == 400
    assert client.counts(q) == (1, 0, 0)


def test_body_over_the_limit(client: QueueClient) -> None:
    q = qname()
    assert client.put(q, max_message_bytes=1024).status_code == 201
    answer = client.send(q, "x" * 1025)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    with_attributes = client.send(q, "x" * 1000, attributes={"big": "y" * 100})
    assert with_attributes.status_code == 413
    assert client.send(q, "x" * 1024).status_code == 200
    assert client.counts(q) == (1, 0, 0)
    big = qname()
    assert client.send(big, "x" * 262_145).status_code == 413  # the default limit: 256 KiB
    assert client.http.get(f"/api/v1/queues/{big}").status_code == 404  # not even created


@pytest.mark.parametrize(
    "attributes",
    [
        {"visibility_timeout": -1},
        {"visibility_timeout": 43_201},
        {"visibility_timeout": "30"},
        {"visibility_timeout": True},
        {"message_retention_seconds": 59},
        {"delay_seconds": 901},
        {"receive_wait_seconds": 21},
        {"max_message_bytes": 10**12},
        {"colour": "blue"},
        {"redrive_policy": {"dead_letter_queue": "d", "max_receive_count": 0}},
        {"redrive_policy": {"dead_letter_queue": "d"}},
        {"redrive_policy": {"dead_letter_queue": "bad#name", "max_receive_count": 3}},
        {"redrive_policy": "d"},
    ],
)
def test_invalid_attribute_values(client: QueueClient, attributes: dict[str, object]) -> None:
    q = qname()
    assert client.put(q, visibility_timeout=7).status_code == 201
    before = client.info(q)["attributes"]
    answer = client.http.put(f"/api/v1/queues/{q}", json=attributes)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"]
    assert client.info(q)["attributes"] == before
    fresh = qname()
    assert client.http.put(f"/api/v1/queues/{fresh}", json=attributes).status_code == 400
    assert client.http.get(f"/api/v1/queues/{fresh}").status_code == 404


def test_queue_cannot_be_its_own_dead_letter_queue(client: QueueClient) -> None:
    q = qname()
    answer = client.put(q, redrive_policy={"dead_letter_queue": q, "max_receive_count": 3})
    assert answer.status_code == 400


@pytest.mark.parametrize(
    "params",
    [{"max": 0}, {"max": 11}, {"max": "ten"}, {"wait": 21}, {"visibility_timeout": 43_201}, {"wait": -1}],
)
def test_invalid_receive_parameters(client: QueueClient, params: dict[str, object]) -> None:
    q = qname()
    client.send_ok(q, "untouched")
    assert client.receive(q, **params).status_code == 400
    assert client.counts(q) == (1, 0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'["body"]',
        b"{}",
        b'{"body": null}',
        b'{"body": "x", "delay_seconds": 901}',
        b'{"body": "x", "attributes": {"bad name": "v"}}',
        b'{"body": "x", "attributes": {"n": 1}}',
        b'{"body": "x", "colour": "blue"}',
    ],
)
def test_invalid_send_bodies(client: QueueClient, body: bytes) -> None:
    q = qname()
    client.send_ok(q, "existing")
    answer = client.http.post(
        f"/api/v1/queues/{q}/messages", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert client.counts(q) == (1, 0, 0)


def test_receipt_handle_from_another_namespace_is_refused(gateway: Gateway) -> None:
    q = qname()
    _, token_a = gateway.user_token()
    _, token_b = gateway.user_token()
    a, b = QueueClient(gateway.base_url, token_a), QueueClient(gateway.base_url, token_b)
    a.send_ok(q, "a's")
    b.send_ok(q, "b's")
    [message] = a.receive_ok(q)
    for answer in (b.delete(q, message["receipt_handle"]), b.visibility(q, message["receipt_handle"], 0)):
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_receipt_handle"
    assert a.counts(q) == (0, 1, 0)
    assert b.counts(q) == (1, 0, 0)


def test_forged_and_foreign_queue_handles_are_refused(client: QueueClient) -> None:
    q, other = qname(), qname()
    client.send_ok(q, "mine")
    client.send_ok(other, "other")
    [message] = client.receive_ok(q)
    handle = message["receipt_handle"]
    raw = bytearray(base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)))
    raw[12] ^= 1  # another stream sequence, same MAC
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (forged, "not-a-handle", "A" * 200):
        answer = client.delete(q, bad)
        assert answer.status_code == 400, answer.text
    answer = client.delete(other, handle)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_receipt_handle"
    assert client.counts(q) == (0, 1, 0)
    assert client.counts(other) == (1, 0, 0)


def test_requests_without_a_token_are_401(gateway: Gateway) -> None:
    answer = httpx.post(gateway.base_url + "/api/v1/queues/myqueue/messages", json={"body": "x"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
