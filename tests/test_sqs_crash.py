"""Competing boto3 producers and consumers while the gateway is killed with SIGKILL and restarted.

Acknowledged means the client got a success answer. Whatever was acknowledged
as sent is received in the end (nothing lost); nothing is received after its
deletion was acknowledged (nothing deleted comes back). Clients that lose the
connection drop what they hold (a send in doubt is not counted, received
messages are not deleted and come back after their visibility timeout) and wait
for the gateway to be back. ``SQS_CRASH_MESSAGES`` sets the count (the issue's
10,000; 1,000 by default to fit the test budget).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tests.harness import Gateway, NatsServer
from tests.sqs_clients import AwsUser, aws_user, sqs_client

MESSAGES = int(os.environ.get("SQS_CRASH_MESSAGES", "1000"))
CONSUMERS = 4
VISIBILITY = 3


class CutOff(Exception):
    """A success status whose body the kill cut short.

    uvicorn writes a response's head and body separately, and botocore reads
    with urllib3's ``enforce_content_length=False``: a SIGKILL between the two
    writes reaches the client as a 200 with a short body, parsed as a result
    without its members. The request may or may not have been carried out.
    """


def batch_answer(call: Callable[..., Any], **params: Any) -> Any:
    """A batch call's answer; ``CutOff`` if it has no ``Successful`` member (its body was cut short)."""
    answer = call(**params)
    if "Successful" not in answer:
        raise CutOff()
    return answer


IN_DOUBT = (BotoCoreError, ClientError, CutOff)


class World:
    """What the clients saw, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        self.half_sent = threading.Event()
        self.done = threading.Event()
        self.acknowledged: set[str] = set()
        self.seen: set[str] = set()
        self.deleted: set[str] = set()
        self.seen_after_delete: list[str] = []
        # a delete whose answer the kill cut off may have been done (SQS: at least once): such a message may not
        # come back, and that is no loss; one that does come back is received and deleted again
        self.delete_in_doubt: set[str] = set()
        self.errors: list[str] = []

    def outage(self, exc: Exception) -> None:
        with self.lock:
            self.errors.append(type(exc).__name__)
        self.up.wait(30)


def producer(client: Any, url: str, world: World) -> None:
    for start in range(0, MESSAGES, 10):
        entries = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(min(10, MESSAGES - start))]
        try:
            answer = batch_answer(client.send_message_batch, QueueUrl=url, Entries=entries)
        except IN_DOUBT as exc:
            world.outage(exc)  # in doubt: not acknowledged
            continue
        with world.lock:
            world.acknowledged.update(entries[int(s["Id"])]["MessageBody"] for s in answer["Successful"])
            if len(world.acknowledged) >= MESSAGES // 2:
                world.half_sent.set()


def consumer(client: Any, url: str, world: World) -> None:
    while not world.done.is_set():
        try:
            messages = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=VISIBILITY
            ).get("Messages", [])
        except (BotoCoreError, ClientError) as exc:
            world.outage(exc)
            continue
        with world.lock:
            for m in messages:
                if m["Body"] in world.deleted:
                    world.seen_after_delete.append(m["Body"])
                world.seen.add(m["Body"])
        if not messages:
            continue
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            answer = batch_answer(client.delete_message_batch, QueueUrl=url, Entries=entries)
        except IN_DOUBT as exc:
            world.outage(exc)  # not deleted (they come back), or deleted with the answer lost
            with world.lock:
                world.delete_in_doubt.update(m["Body"] for m in messages)
            continue
        with world.lock:
            world.deleted.update(messages[int(s["Id"])]["Body"] for s in answer["Successful"])


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def test_kill_9_in_the_middle(make_gateway: Callable[..., Gateway], nats_server: NatsServer) -> None:
    gw = make_gateway(nats_server.url)
    user: AwsUser = aws_user(gw)

    def client() -> Any:
        return sqs_client(gw, user, retries=0, connect_timeout=1, read_timeout=10)

    url = client().create_queue(QueueName="crash", Attributes={"VisibilityTimeout": str(VISIBILITY)})["QueueUrl"]
    world = World()
    threads = [threading.Thread(target=producer, args=(client(), url, world))]
    threads += [threading.Thread(target=consumer, args=(client(), url, world)) for _ in range(CONSUMERS)]
    for thread in threads:
        thread.start()
    try:
        assert world.half_sent.wait(60)
        world.up.clear()
        gw.stop(signal.SIGKILL)
        gw.start()
        world.up.set()
        threads[0].join(120)
        wait_until(
            lambda: world.acknowledged <= world.deleted | world.delete_in_doubt,
            60,
            lambda: (
                f"acknowledged messages were not all received: {sorted(world.acknowledged - world.deleted - world.delete_in_doubt)[:20]}, "
                f"{len(world.acknowledged - world.seen)} never seen; errors {world.errors[-3:]}"
            ),
        )
    finally:
        world.done.set()
        world.up.set()
        for thread in threads:
            thread.join(30)
    assert world.errors, "the kill went unnoticed"
    assert world.acknowledged <= world.seen
    assert world.seen_after_delete == []
    assert len(world.acknowledged) >= MESSAGES // 2
