"""FIFO queues through boto3 and the REST API: group order, one batch in flight per group,
deduplication within the window, sequence numbers, FIFO dead-letter queues.

Waiting is done with long polls: a message held back for its group is looked at
again within a second, so each wait is bounded by that.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.harness import Gateway, NatsServer
from tests.sqs_clients import AwsUser, aws_user, sqs_client


@pytest.fixture(scope="module")
def user(gateway: Gateway) -> AwsUser:
    return aws_user(gateway)


@pytest.fixture(scope="module")
def sqs(gateway: Gateway, user: AwsUser) -> Iterator[Any]:
    client = sqs_client(gateway, user)
    yield client
    client.close()


def fifo_queue(sqs: Any, **attributes: str) -> str:
    name = "f-" + secrets.token_hex(4) + ".fifo"
    return str(sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", **attributes})["QueueUrl"])


def code_of(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def receive(sqs: Any, url: str, **params: Any) -> list[dict[str, Any]]:
    answer = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], **params)
    return list(answer.get("Messages", []))


def test_fifo_queues_and_their_rules(sqs: Any) -> None:
    url = fifo_queue(sqs)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["FifoQueue"], attributes["ContentBasedDeduplication"]) == ("true", "false")
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName="plain-" + secrets.token_hex(3), Attributes={"FifoQueue": "true"})
    assert code_of(excinfo) == "InvalidParameterValue"  # a FIFO queue's name ends in .fifo
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(excinfo) == "MissingParameter"
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code_of(excinfo) == "InvalidParameterValue"  # no deduplication id, no content-based deduplication
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d", DelaySeconds=1)
    assert code_of(excinfo) == "InvalidParameterValue"
    standard = sqs.create_queue(QueueName="s-" + secrets.token_hex(4))["QueueUrl"]
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=standard, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "false"})
    assert code_of(excinfo) == "InvalidAttributeName"


def test_deduplication(sqs: Any) -> None:
    url = fifo_queue(sqs)
    first = sqs.send_message(QueueUrl=url, MessageBody="once", MessageGroupId="g", MessageDeduplicationId="d1")
    again = sqs.send_message(QueueUrl=url, MessageBody="twice", MessageGroupId="g", MessageDeduplicationId="d1")
    assert (again["MessageId"], again["SequenceNumber"]) == (first["MessageId"], first["SequenceNumber"])
    other = sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g", MessageDeduplicationId="d2")
    assert int(other["SequenceNumber"]) > int(first["SequenceNumber"])
    messages = receive(sqs, url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in messages] == ["once", "other"]
    assert messages[0]["MessageId"] == first["MessageId"]
    assert messages[0]["Attributes"]["MessageDeduplicationId"] == "d1"
    assert messages[0]["Attributes"]["SequenceNumber"] == first["SequenceNumber"]
    assert messages[0]["Attributes"]["MessageGroupId"] == "g"
    for m in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # deleted, still deduplicated within the window
    sqs.send_message(QueueUrl=url, MessageBody="late", MessageGroupId="g", MessageDeduplicationId="d1")
    assert receive(sqs, url) == []
    content = fifo_queue(sqs, ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="g1")
    b = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="g2")
    assert a["MessageId"] == b["MessageId"]
    batch = sqs.send_message_batch(
        QueueUrl=content,
        Entries=[
            {"Id": "x", "MessageBody": "same", "MessageGroupId": "g"},
            {"Id": "y", "MessageBody": "new", "MessageGroupId": "g"},
        ],
    )
    assert {s["Id"]: s["MessageId"] for s in batch["Successful"]}["x"] == a["MessageId"]
    assert [m["Body"] for m in receive(sqs, content, MaxNumberOfMessages=10)] == ["same", "new"]


def test_order_and_one_batch_in_flight_per_group(sqs: Any) -> None:
    url = fifo_queue(sqs, ContentBasedDeduplication="true")
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"a{i}", MessageGroupId="A")
        if i < 3:
            sqs.send_message(QueueUrl=url, MessageBody=f"b{i}", MessageGroupId="B")
    [a0] = receive(sqs, url, MaxNumberOfMessages=1)
    assert a0["Body"] == "a0"
    others = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    assert [m["Body"] for m in others] == ["b0", "b1", "b2"]  # group A is busy: none of its messages
    assert receive(sqs, url, MaxNumberOfMessages=10) == []  # both groups have a batch in flight
    sqs.delete_message(QueueUrl=url, ReceiptHandle=a0["ReceiptHandle"])
    seen: list[str] = []
    while len(seen) < 4:
        batch = receive(sqs, url, MaxNumberOfMessages=2, WaitTimeSeconds=3)
        assert batch, f"group A stalled after {seen}"
        seen += [m["Body"] for m in batch]
        assert receive(sqs, url, MaxNumberOfMessages=10) == []  # this batch holds group A, b0-b2 hold B
        for m in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert seen == ["a1", "a2", "a3", "a4"]


def test_an_expired_batch_comes_again_first_and_in_order(sqs: Any) -> None:
    url = fifo_queue(sqs, ContentBasedDeduplication="true")
    for i in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="G")
    first = receive(sqs, url, MaxNumberOfMessages=2, VisibilityTimeout=1)
    assert [m["Body"] for m in first] == ["m0", "m1"]
    # A long poll answers as soon as a message is visible again: the two may come in two answers.
    again: list[dict[str, Any]] = []
    while len(again) < 2:
        batch = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
        assert batch, f"the expired batch did not come again after {[m['Body'] for m in again]}"
        again += batch
    assert [m["Body"] for m in again][:2] == ["m0", "m1"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again[:2]] == ["2", "2"]


def test_fifo_dead_letter_queue_keeps_order(sqs: Any) -> None:
    dlq = fifo_queue(sqs)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).decode()
    url = fifo_queue(sqs, ContentBasedDeduplication="true", RedrivePolicy=policy)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"p{i}", MessageGroupId="G")
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10, VisibilityTimeout=0)] == ["p0", "p1", "p2"]
    assert receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1) == []  # moved, in order
    moved = receive(sqs, dlq, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    assert [m["Body"] for m in moved] == ["p0", "p1", "p2"]
    assert [m["Attributes"]["MessageGroupId"] for m in moved] == ["G"] * 3


def test_fifo_on_the_rest_api(gateway: Gateway, user: AwsUser, sqs: Any) -> None:
    token = gateway.token(user.api_key, app="default")
    rest = httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    name = "r-" + secrets.token_hex(4) + ".fifo"
    refused = rest.post(f"/api/v1/queues/{name}/messages", json={"body": "x"})
    assert refused.status_code == 400  # a .fifo queue needs a group id
    sent = [
        rest.post(
            f"/api/v1/queues/{name}/messages", json={"body": f"r{i}", "group_id": "g", "deduplication_id": f"d{i}"}
        ).json()
        for i in range(3)
    ]
    duplicate = rest.post(
        f"/api/v1/queues/{name}/messages", json={"body": "r0", "group_id": "g", "deduplication_id": "d0"}
    )
    assert duplicate.json()["message_id"] == sent[0]["message_id"]
    assert rest.get(f"/api/v1/queues/{name}").json()["attributes"]["fifo_queue"] is True
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    [m0] = receive(sqs, url)
    assert (m0["Body"], m0["MessageId"], m0["Attributes"]["SequenceNumber"]) == (
        "r0",
        sent[0]["message_id"],
        sent[0]["sequence_number"],
    )
    assert rest.get(f"/api/v1/queues/{name}/messages", params={"max": 10}).json()["messages"] == []  # group busy
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m0["ReceiptHandle"])
    got: list[tuple[str, str]] = []  # a long poll answers as soon as some are visible: r1 alone, or r1 and r2
    while len(got) < 2:
        batch = rest.get(f"/api/v1/queues/{name}/messages", params={"max": 10, "wait": 3}).json()["messages"]
        assert batch, f"nothing more after {got}"
        got += [(m["body"], m["group_id"]) for m in batch]
        if len(got) < 2:  # one batch in flight per group: the next comes once this one is deleted
            assert rest.delete(f"/api/v1/queues/{name}/messages/{batch[-1]['receipt_handle']}").status_code == 204
    assert got == [("r1", "g"), ("r2", "g")]
    rest.close()


def test_groups_hold_across_replicas(
    gateway: Gateway, user: AwsUser, sqs: Any, nats_server: NatsServer, make_gateway: Callable[..., Gateway]
) -> None:
    """A second gateway on the same NATS (same server secret) sees the group state the first one wrote."""
    replica = make_gateway(nats_server.url, secret_key=gateway.secret_key, admin_key=gateway.admin_key)
    other = sqs_client(replica, user)
    url = fifo_queue(sqs, ContentBasedDeduplication="true")
    other_url = url.replace(gateway.base_url, replica.base_url)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"x{i}", MessageGroupId="G")
    [first] = receive(sqs, url)
    assert receive(other, other_url, MaxNumberOfMessages=10) == []  # the group's batch is in flight
    other.delete_message(QueueUrl=other_url, ReceiptHandle=first["ReceiptHandle"])  # handles work on any replica
    bodies: list[str] = []  # a long poll answers as soon as some are visible: x1 alone, or x1 and x2 together
    while len(bodies) < 2:
        batch = receive(other, other_url, MaxNumberOfMessages=10, WaitTimeSeconds=3)
        assert batch, f"nothing more after {bodies}"
        bodies += [m["Body"] for m in batch]
        if len(bodies) < 2:  # one batch in flight per group: the next comes once this one is deleted
            other.delete_message(QueueUrl=other_url, ReceiptHandle=batch[-1]["ReceiptHandle"])
    assert bodies == ["x1", "x2"]
