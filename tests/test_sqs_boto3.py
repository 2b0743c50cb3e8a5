"""boto3 against the gateway's SQS endpoint, over the JSON and the Query protocol: every action.

Expectations come from the Amazon SQS API reference (error codes, statuses,
defaults, digests); botocore itself checks MD5OfMessageBody and
MD5OfMessageAttributes on every send and receive.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.harness import Gateway
from tests.sqs_clients import PROTOCOLS, AwsUser, aws_user, sqs_client
from tests.waiting import poll_sync


@pytest.fixture(scope="module")
def user(gateway: Gateway) -> AwsUser:
    return aws_user(gateway)


@pytest.fixture(scope="module", params=PROTOCOLS)
def sqs(request: pytest.FixtureRequest, gateway: Gateway, user: AwsUser) -> Iterator[Any]:
    client = sqs_client(gateway, user, request.param)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sqs_json(gateway: Gateway, user: AwsUser) -> Iterator[Any]:
    """For behaviours of the engine behind the wire (the codecs are covered by the ``sqs`` tests)."""
    client = sqs_client(gateway, user, "json")
    yield client
    client.close()


def qname(suffix: str = "") -> str:
    return "q-" + secrets.token_hex(4) + suffix


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- queues ------------------------------------------------------------------------------------------


def test_create_is_idempotent_and_refuses_different_attributes(sqs: Any, gateway: Gateway, user: AwsUser) -> None:
    name = qname()
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    assert url == f"{gateway.base_url}/{user.user_id}/{name}"
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url  # no attributes asked for: nothing differs
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "41"})
    assert error_of(excinfo) == ("QueueAlreadyExists", 400)
    assert isinstance(excinfo.value, sqs.exceptions.QueueNameExists)
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as missing:
        sqs.get_queue_url(QueueName=name)
    assert error_of(missing) == ("AWS.SimpleQueueService.NonExistentQueue", 400)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_queue_names_follow_sqs_rules(sqs: Any) -> None:
    for bad in ("has space", "a" * 81, "dots.not.allowed", "x.fifo"):
        with pytest.raises(ClientError) as excinfo:
            sqs.create_queue(QueueName=bad)
        assert error_of(excinfo) == ("InvalidParameterValue", 400), bad


def test_list_queues_by_prefix_with_pagination(sqs: Any) -> None:
    prefix = "lq-" + secrets.token_hex(3)
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        sqs.create_queue(QueueName=name)
    everything = sqs.list_queues(QueueNamePrefix=prefix)
    assert sorted(u.rsplit("/", 1)[1] for u in everything["QueueUrls"]) == names
    assert "NextToken" not in everything
    seen: list[str] = []
    page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    while True:
        assert len(page["QueueUrls"]) <= 2
        seen += [u.rsplit("/", 1)[1] for u in page["QueueUrls"]]
        if "NextToken" not in page:
            break
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=page["NextToken"])
    assert seen == names
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="nothing-" + secrets.token_hex(4))


def test_queue_attributes_all_and_each(sqs: Any, user: AwsUser) -> None:
    name = qname()
    before = int(time.time())
    url = sqs.create_queue(QueueName=name, Attributes={"DelaySeconds": "0", "MaximumMessageSize": "2048"})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["QueueArn"] == f"arn:aws:sqs:default:{user.user_id}:{name}"
    assert attributes["VisibilityTimeout"] == "30"
    assert attributes["MessageRetentionPeriod"] == "345600"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "0"
    assert attributes["MaximumMessageSize"] == "2048"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "0"
    assert before - 1 <= int(attributes["CreatedTimestamp"]) <= time.time() + 1
    assert "RedrivePolicy" not in attributes and "FifoQueue" not in attributes
    for attribute in ("VisibilityTimeout", "QueueArn", "CreatedTimestamp", "LastModifiedTimestamp", "DelaySeconds"):
        answer = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[attribute])["Attributes"]
        assert answer == {attribute: attributes[attribute]}
    sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"VisibilityTimeout": "7", "ReceiveMessageWaitTimeSeconds": "1", "Policy": "{}"}
    )
    changed = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (changed["VisibilityTimeout"], changed["ReceiveMessageWaitTimeSeconds"], changed["Policy"]) == (
        "7",
        "1",
        "{}",
    )
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "43201"})
    assert error_of(excinfo) == ("InvalidAttributeValue", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"NoSuchAttribute": "1"})
    assert error_of(excinfo) == ("InvalidAttributeName", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    assert error_of(excinfo) == ("InvalidAttributeName", 400)


def test_tags(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), tags={"team": "a"})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "team": "b"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "prod", "team": "b"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "prod"}


# -- messages -------------------------------------------------------------------------------------------


ATTRIBUTES = {
    "colour": {"DataType": "String", "StringValue": "blue ✓"},
    "count": {"DataType": "Number", "StringValue": "42"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    "custom.kind": {"DataType": "String.custom", "StringValue": "x"},
}


def test_send_receive_delete_with_attributes(sqs: Any, user: AwsUser) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    body = 'Unicode ✓ and <xml> & "quotes"\r\n'
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes=ATTRIBUTES,
        MessageSystemAttributes={
            "AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}
        },
    )
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert "MD5OfMessageAttributes" in sent and "MD5OfMessageSystemAttributes" in sent
    before_ms = int(time.time() * 1000)
    [message] = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"], WaitTimeSeconds=5
    )["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == body
    assert message["MessageAttributes"] == ATTRIBUTES
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    system = message["Attributes"]
    assert system["ApproximateReceiveCount"] == "1"
    assert system["SenderId"] == user.user_id
    assert system["AWSTraceHeader"] == "Root=1-5759e988-bd862e3fe1be46a994272793"
    assert int(system["SentTimestamp"]) <= int(system["ApproximateFirstReceiveTimestamp"]) <= before_ms + 5000
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_receive_selects_attributes_by_name_and_prefix(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=ATTRIBUTES)
    system = "MessageSystemAttributeNames" if sqs.meta.service_model.protocol == "json" else "AttributeNames"
    [message] = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["custom.*", "count"], VisibilityTimeout=0, **{system: ["SentTimestamp"]}
    )["Messages"]
    assert set(message["MessageAttributes"]) == {"custom.kind", "count"}
    assert set(message["Attributes"]) == {"SentTimestamp"}
    [again] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]  # visible again at once
    assert "MessageAttributes" not in again and "MD5OfMessageAttributes" not in again and "Attributes" not in again


def test_visibility_timeout_and_receive_count(sqs_json: Any) -> None:
    url = sqs_json.create_queue(QueueName=qname(), Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sqs_json.send_message(QueueUrl=url, MessageBody="again")
    [first] = sqs_json.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert "Messages" not in sqs_json.receive_message(QueueUrl=url)  # invisible for 30 s
    sqs_json.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    [second] = sqs_json.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=5)[
        "Messages"
    ]
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs_json.delete_message(
        QueueUrl=url, ReceiptHandle=first["ReceiptHandle"]
    )  # stale handle: succeeds, deletes nothing
    attributes = sqs_json.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    with pytest.raises(ClientError) as excinfo:
        sqs_json.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=43201)
    assert error_of(excinfo) == ("InvalidParameterValue", 400)
    sqs_json.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    with pytest.raises(ClientError) as excinfo:
        sqs_json.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert error_of(excinfo) == ("ReceiptHandleIsInvalid", 400)


def test_delay_seconds_hold_a_message_back(sqs_json: Any) -> None:
    url = sqs_json.create_queue(QueueName=qname())["QueueUrl"]
    sqs_json.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    delayed = sqs_json.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert delayed["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs_json.receive_message(QueueUrl=url)
    [message] = sqs_json.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert message["Body"] == "later"
    with pytest.raises(ClientError) as excinfo:
        sqs_json.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert error_of(excinfo) == ("InvalidParameterValue", 400)


def test_invalid_messages_get_sqs_errors(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"MessageBody": "x" * 1025}, "InvalidParameterValue"),
        ({"MessageBody": "bad \x01 char"}, "InvalidMessageContents"),
        (
            {"MessageBody": "x", "MessageAttributes": {"a": {"DataType": "Number", "StringValue": "nan?"}}},
            "InvalidParameterValue",
        ),
        (
            {"MessageBody": "x", "MessageAttributes": {"a": {"DataType": "Integer", "StringValue": "1"}}},
            "InvalidParameterValue",
        ),
        (
            {"MessageBody": "x", "MessageAttributes": {"AWS.x": {"DataType": "String", "StringValue": "1"}}},
            "InvalidParameterValue",
        ),
        (
            {
                "MessageBody": "x",
                "MessageAttributes": {f"a{i}": {"DataType": "String", "StringValue": "1"} for i in range(11)},
            },
            "InvalidParameterValue",
        ),
    ]
    for params, code in cases:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=url, **params)
        assert error_of(excinfo) == (code, 400), params
    with pytest.raises(ClientError) as excinfo:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert error_of(excinfo) == ("InvalidParameterValue", 400)


def test_batches(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    entries: list[dict[str, Any]] = [
        {
            "Id": f"e{i}",
            "MessageBody": f"m{i}",
            "MessageAttributes": {"i": {"DataType": "Number", "StringValue": str(i)}},
        }
        for i in range(9)
    ]
    entries.append({"Id": "bad", "MessageBody": "x", "DelaySeconds": 1000})
    answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(s["Id"] for s in answer["Successful"]) == sorted(f"e{i}" for i in range(9))
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("bad", "InvalidParameterValue", True)
    ]
    received: list[dict[str, Any]] = []
    while len(received) < 9:
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    assert sorted(m["Body"] for m in received) == sorted(f"m{i}" for i in range(9))
    changes = [
        {"Id": "a", "ReceiptHandle": received[0]["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "b", "ReceiptHandle": "junk", "VisibilityTimeout": 1},
    ]
    answer = sqs.change_message_visibility_batch(QueueUrl=url, Entries=changes)
    assert [s["Id"] for s in answer["Successful"]] == ["a"]
    assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [("b", "ReceiptHandleIsInvalid")]
    deletes = [{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
    answer = sqs.delete_message_batch(QueueUrl=url, Entries=[*deletes, {"Id": "junk", "ReceiptHandle": "junk"}])
    assert len(answer["Successful"]) == 9
    assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [("junk", "ReceiptHandleIsInvalid")]

    def batch_error(entries: list[dict[str, Any]]) -> tuple[str, int]:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return error_of(excinfo)

    assert batch_error([]) == ("AWS.SimpleQueueService.EmptyBatchRequest", 400)
    assert batch_error([{"Id": f"i{i}", "MessageBody": "x"} for i in range(11)]) == (
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        400,
    )
    assert batch_error([{"Id": "same", "MessageBody": "x"}] * 2) == (
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        400,
    )
    assert batch_error([{"Id": "no spaces", "MessageBody": "x"}]) == ("AWS.SimpleQueueService.InvalidBatchEntryId", 400)
    assert batch_error([{"Id": f"i{i}", "MessageBody": "x" * 30_000} for i in range(10)]) == (
        "AWS.SimpleQueueService.BatchRequestTooLong",
        400,
    )


def test_purge(sqs_json: Any) -> None:
    url = sqs_json.create_queue(QueueName=qname())["QueueUrl"]
    sqs_json.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(3)])
    sqs_json.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs_json.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    with pytest.raises(sqs_json.exceptions.PurgeQueueInProgress) as excinfo:
        sqs_json.purge_queue(QueueUrl=url)  # one purge a minute
    assert error_of(excinfo) == ("AWS.SimpleQueueService.PurgeQueueInProgress", 403)


def test_redrive_to_a_dead_letter_queue_and_its_sources(sqs_json: Any, user: AwsUser) -> None:
    dlq_url = sqs_json.create_queue(QueueName=qname("-dlq"))["QueueUrl"]
    dlq_arn = sqs_json.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).decode()
    url = sqs_json.create_queue(QueueName=qname(), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    stored = orjson.loads(
        sqs_json.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    assert stored == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}
    assert sqs_json.list_dead_letter_source_queues(QueueUrl=dlq_url)["queueUrls"] == [url]
    sqs_json.send_message(QueueUrl=url, MessageBody="poison")
    sqs_json.receive_message(QueueUrl=url, VisibilityTimeout=0)  # the one allowed receive
    assert "Messages" not in sqs_json.receive_message(QueueUrl=url, WaitTimeSeconds=1)  # the next one moves it
    [moved] = sqs_json.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=5)["Messages"]
    assert moved["Body"] == "poison"
    missing = f"arn:aws:sqs_json:default:{user.user_id}:no-such-queue"
    with pytest.raises(ClientError) as excinfo:
        sqs_json.set_queue_attributes(
            QueueUrl=url,
            Attributes={"RedrivePolicy": orjson.dumps({"deadLetterTargetArn": missing, "maxReceiveCount": 1}).decode()},
        )
    assert error_of(excinfo) == ("InvalidAttributeValue", 400)


def test_queue_url_path_and_other_accounts(sqs_json: Any, gateway: Gateway, user: AwsUser) -> None:
    name = qname()
    sqs_json.create_queue(QueueName=name)
    with pytest.raises(sqs_json.exceptions.QueueDoesNotExist):
        sqs_json.send_message(QueueUrl=f"{gateway.base_url}/someone-else/{name}", MessageBody="x")
    # any host is fine: only the path names the queue
    sqs_json.send_message(QueueUrl=f"https://sqs_json.example.com/{user.user_id}/{name}", MessageBody="x")


# -- with the other APIs ---------------------------------------------------------------------------------


def test_cross_api_delivery(gateway: Gateway, user: AwsUser, sqs_json: Any) -> None:
    token = gateway.token(user.api_key, app="default")
    rest = httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    name = qname()
    url = sqs_json.create_queue(QueueName=name)["QueueUrl"]
    sent = sqs_json.send_message(
        QueueUrl=url, MessageBody="from boto3", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}}
    )
    [message] = rest.get(f"/api/v1/queues/{name}/messages", params={"wait": 5}).json()["messages"]
    assert (message["message_id"], message["body"], message["attributes"]) == (
        sent["MessageId"],
        "from boto3",
        {"k": "v"},
    )
    assert rest.delete(f"/api/v1/queues/{name}/messages/{message['receipt_handle']}").status_code == 204
    answer = rest.post(f"/api/v1/queues/{name}/messages", json={"body": "from REST", "attributes": {"a": "b"}}).json()
    [back] = sqs_json.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=5)["Messages"]
    assert (back["MessageId"], back["Body"], back["MessageAttributes"]) == (
        answer["message_id"],
        "from REST",
        {"a": {"DataType": "String", "StringValue": "b"}},
    )
    sqs_json.delete_message(QueueUrl=url, ReceiptHandle=back["ReceiptHandle"])
    assert rest.get(f"/api/v1/queues/{name}").json()["approximate_in_flight"] == 0
    rest.close()


def test_long_poll_is_woken_by_a_send(gateway: Gateway, user: AwsUser, sqs_json: Any) -> None:
    """The receive returns within 100 ms of the send starting (best of three; each well under a second)."""
    receiver = sqs_client(gateway, user)
    sender = sqs_json
    url = sender.create_queue(QueueName=qname())["QueueUrl"]
    started = threading.Event()
    receiver.meta.events.register("before-send.sqs.ReceiveMessage", lambda **_: started.set())
    latencies = []
    for attempt in range(3):
        got: dict[str, Any] = {}

        def poll(got: dict[str, Any] = got) -> None:
            got["answer"] = receiver.receive_message(QueueUrl=url, WaitTimeSeconds=10)
            got["at"] = time.monotonic()

        started.clear()
        thread = threading.Thread(target=poll)
        thread.start()
        assert started.wait(10)  # the long poll is on its way
        sent_at = time.monotonic()
        sender.send_message(QueueUrl=url, MessageBody=f"wake up {attempt}")
        thread.join(10)
        [message] = got["answer"]["Messages"]
        assert message["Body"] == f"wake up {attempt}"
        sender.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        latencies.append(got["at"] - sent_at)
    print("long poll answered", ", ".join(f"{t * 1000:.0f} ms" for t in latencies), "after the send began")
    assert min(latencies) < 0.1 and max(latencies) < 1.0, latencies


def test_dead_letter_redrive_with_move_tasks(sqs_json: Any, gateway: Gateway, user: AwsUser) -> None:
    sqs = sqs_json
    dlq_url = sqs.create_queue(QueueName=qname("-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).decode()
    url = sqs.create_queue(QueueName=qname(), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as excinfo:
        sqs.start_message_move_task(SourceArn=arn)  # not a dead-letter queue
    assert error_of(excinfo)[0] == "InvalidParameterValue"
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
    for _ in range(2):  # received once each, then moved to the dead-letter queue by the next receive
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    dead: list[str] = []
    while len(dead) < 3:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=5, VisibilityTimeout=0)
        dead += [m["MessageId"] for m in batch["Messages"]]
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=100)["TaskHandle"]
    back: list[dict[str, Any]] = []
    while len(back) < 3:
        back += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)["Messages"]
    assert sorted(m["Body"] for m in back) == ["m0", "m1", "m2"]
    task = poll_sync(  # the move task's state lives in the gateway; SQS has no call that waits for it
        lambda: sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0],
        lambda t: t["Status"] != "RUNNING",
        what="the message move task finished",
        timeout=5,
        every=0.02,
    )
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 3
    assert task["SourceArn"] == dlq_arn and "TaskHandle" not in task
    with pytest.raises(ClientError) as excinfo:
        sqs.cancel_message_move_task(TaskHandle=handle)  # it has finished
    assert error_of(excinfo)[0] == "ResourceNotFoundException"
    token = gateway.token(user.api_key, app="default")
    rest = httpx.get(
        f"{gateway.base_url}/api/v1/queues/{dlq_arn.rsplit(':', 1)[1]}/move-tasks",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [(t["status"], t["moved"]) for t in rest.json()["tasks"]] == [("completed", 3)]
