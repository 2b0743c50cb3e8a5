"""The AWS CLI (Debian's ``awscli``, which speaks the Query protocol) against the gateway: every
SQS action it has, with credentials from the environment as users set them.

Independent commands run side by side, so the test takes a few rounds of CLI start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway
from tests.sqs_clients import AwsUser, aws_user

AWS = "/usr/bin/aws"


class Cli:
    def __init__(self, gateway: Gateway, user: AwsUser, home: Path) -> None:
        self.endpoint = gateway.base_url
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": user.access_key_id,
            "AWS_SECRET_ACCESS_KEY": user.secret_access_key,
            "AWS_DEFAULT_REGION": "default",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "HOME": str(home),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [AWS, "--endpoint-url", self.endpoint, "--output", "json", "sqs", *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, f"aws sqs {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def all_ok(self, *commands: tuple[str, ...]) -> list[Any]:
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda c: self.ok(*c), commands))


@pytest.fixture(scope="module")
def cli(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    if not os.access(AWS, os.X_OK):
        raise RuntimeError("the awscli Debian package is not installed (make test-system-deps)")
    return Cli(gateway, aws_user(gateway), tmp_path_factory.mktemp("aws-home"))


def test_every_action_with_the_aws_cli(cli: Cli, gateway: Gateway) -> None:
    created = cli.all_ok(
        ("create-queue", "--queue-name", "cli-work", "--attributes", "VisibilityTimeout=20", "--tags", "team=a"),
        ("create-queue", "--queue-name", "cli-dlq"),
    )
    url, dlq = created[0]["QueueUrl"], created[1]["QueueUrl"]
    assert url.startswith(gateway.base_url + "/") and url.endswith("/cli-work")
    dlq_arn = dlq.replace(gateway.base_url + "/", "arn:aws:sqs:default:").replace("/", ":")
    redrive = json.dumps({"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})
    attributes = (
        '{"colour": {"DataType": "String", "StringValue": "blue"}, "n": {"DataType": "Number", "StringValue": "7"}}'
    )
    sent, batch, found, listed, _, _ = cli.all_ok(
        ("send-message", "--queue-url", url, "--message-body", "one", "--message-attributes", attributes),
        ("send-message-batch", "--queue-url", url, "--entries", "Id=a,MessageBody=two", "Id=b,MessageBody=three"),
        ("get-queue-url", "--queue-name", "cli-work"),
        ("list-queues", "--queue-name-prefix", "cli-"),
        ("set-queue-attributes", "--queue-url", url, "--attributes", redrive),
        ("tag-queue", "--queue-url", url, "--tags", "env=test"),
    )
    assert sent["MD5OfMessageAttributes"] and sent["MD5OfMessageBody"] == "f97c5d29941bfb1b2fdab0874906ab82"
    assert sorted(s["Id"] for s in batch["Successful"]) == ["a", "b"]
    assert found["QueueUrl"] == url
    assert sorted(listed["QueueUrls"]) == sorted([url, dlq])
    received, tags, sources, queue = cli.all_ok(
        (
            "receive-message",
            "--queue-url",
            url,
            "--max-number-of-messages",
            "10",
            "--wait-time-seconds",
            "5",
            "--attribute-names",
            "All",
            "--message-attribute-names",
            "All",
        ),
        ("list-queue-tags", "--queue-url", url),
        ("list-dead-letter-source-queues", "--queue-url", dlq),
        ("get-queue-attributes", "--queue-url", url, "--attribute-names", "All"),
    )
    messages = received["Messages"]
    while len(messages) < 3:
        messages += cli.ok("receive-message", "--queue-url", url, "--max-number-of-messages", "10")["Messages"]
    by_body = {m["Body"]: m for m in messages}
    assert set(by_body) == {"one", "two", "three"}
    assert by_body["one"]["MessageAttributes"]["n"] == {"StringValue": "7", "DataType": "Number"}
    assert tags["Tags"] == {"team": "a", "env": "test"}
    assert sources["queueUrls"] == [url]
    assert queue["Attributes"]["VisibilityTimeout"] == "20"
    assert json.loads(queue["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn
    one, two, three = (by_body[b]["ReceiptHandle"] for b in ("one", "two", "three"))
    cli.all_ok(
        ("delete-message", "--queue-url", url, "--receipt-handle", one),
        ("change-message-visibility", "--queue-url", url, "--receipt-handle", two, "--visibility-timeout", "0"),
        (
            "change-message-visibility-batch",
            "--queue-url",
            url,
            "--entries",
            json.dumps([{"Id": "x", "ReceiptHandle": three, "VisibilityTimeout": 0}]),
        ),
        ("untag-queue", "--queue-url", url, "--tag-keys", "team"),
    )
    again = cli.ok("receive-message", "--queue-url", url, "--max-number-of-messages", "10", "--wait-time-seconds", "5")
    handles = [{"Id": f"m{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(again["Messages"])]
    deleted, _, tags = cli.all_ok(
        ("delete-message-batch", "--queue-url", url, "--entries", json.dumps(handles)),
        ("purge-queue", "--queue-url", dlq),
        ("list-queue-tags", "--queue-url", url),
    )
    assert len(deleted["Successful"]) == len(handles) >= 1
    assert tags["Tags"] == {"env": "test"}
    cli.all_ok(("delete-queue", "--queue-url", url), ("delete-queue", "--queue-url", dlq))
    missing = cli.run("get-queue-url", "--queue-name", "cli-work")
    assert missing.returncode != 0
    assert "AWS.SimpleQueueService.NonExistentQueue" in missing.stderr
