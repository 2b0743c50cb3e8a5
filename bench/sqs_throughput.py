"""SQS throughput with boto3: Flow-Gate's SQS endpoint against moto's SQS server, same run, same client.

    python bench/sqs_throughput.py [--messages 2000] [--threads 8]

Starts a real nats-server -js and the gateway (and ``moto_server``) on free
ports. For single and batched (10) operations it measures messages/s of three
phases, each with ``--threads`` boto3 clients (one per thread, JSON protocol):

- send: ``SendMessage`` (or ``SendMessageBatch`` of 10) until ``--messages`` are sent;
- receive: ``ReceiveMessage`` with ``MaxNumberOfMessages`` 1 (or 10) until all were received
  (visibility timeout 300 s);
- delete: ``DeleteMessage`` (or ``DeleteMessageBatch`` of 10) for every one.

moto keeps queues in memory in one Python process; Flow-Gate stores every
message in JetStream (file storage) and checks each request's SigV4 signature
against the key store, so the ratio is the price of durability and auth.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Gateway, NatsServer, free_port, temp_dir
from tests.sqs_clients import aws_user

BODY = "x" * 100


class Target:
    def __init__(self, name: str, endpoint: str, region: str, key: str, secret: str) -> None:
        self.name, self.endpoint, self.region, self.key, self.secret = name, endpoint, region, key, secret

    def client(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            config=Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=4),
        )


def timed(threads: int, clients: list[Any], work: Callable[[Any], int]) -> float:
    """Messages per second of ``work`` run by every client until it returns 0."""
    total = 0
    lock = threading.Lock()

    def run(client: Any) -> None:
        nonlocal total
        while (done := work(client)) > 0:
            with lock:
                total += done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, clients))
    return total / (time.perf_counter() - started)


def measure(target: Target, messages: int, threads: int, batch: int) -> dict[str, float]:
    clients = [target.client() for _ in range(threads)]
    name = f"bench-{batch}-{int(time.time() * 1000)}"
    url = clients[0].create_queue(QueueName=name, Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    sends = iter(range(0, messages, batch))
    lock = threading.Lock()
    handles: list[str] = []
    received = itertools.count()

    def send(client: Any) -> int:
        with lock:
            start = next(sends, None)
        if start is None:
            return 0
        if batch == 1:
            client.send_message(QueueUrl=url, MessageBody=BODY)
            return 1
        entries = [{"Id": str(i), "MessageBody": BODY} for i in range(min(batch, messages - start))]
        return len(client.send_message_batch(QueueUrl=url, Entries=entries)["Successful"])

    def receive(client: Any) -> int:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=batch).get("Messages", [])
        with lock:
            handles.extend(m["ReceiptHandle"] for m in got)
            for _ in got:
                next(received)
        return len(got)

    def delete(client: Any) -> int:
        with lock:
            mine = [handles.pop() for _ in range(min(batch, len(handles)))]
        if not mine:
            return 0
        if batch == 1:
            client.delete_message(QueueUrl=url, ReceiptHandle=mine[0])
            return 1
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(mine)]
        return len(client.delete_message_batch(QueueUrl=url, Entries=entries)["Successful"])

    rates = {"send": timed(threads, clients, send), "receive": timed(threads, clients, receive)}
    rates["delete"] = timed(threads, clients, delete)
    clients[0].delete_queue(QueueUrl=url)
    return rates


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start (pip install 'moto[server]')") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    store, data = temp_dir("fg-bench-nats-"), temp_dir("fg-bench-gw-")
    nats_server = NatsServer(store).start()
    gateway = Gateway(nats_server.url, data, env={"FLOWGATE_LOG_LEVEL": "warning"}).start()
    moto, moto_url = start_moto()
    try:
        user = aws_user(gateway)
        flowgate = Target("Flow-Gate", gateway.base_url, "default", user.access_key_id, user.secret_access_key)
        baseline = Target("moto", moto_url, "us-east-1", "testing", "testing")
        print(f"{args.messages} messages of {len(BODY)} bytes, {args.threads} boto3 clients in threads")
        print(f"{'operation':<22}{'Flow-Gate msg/s':>16}{'moto msg/s':>12}{'ratio':>8}")
        for batch in (1, 10):
            ours = measure(flowgate, args.messages, args.threads, batch)
            theirs = measure(baseline, args.messages, args.threads, batch)
            for phase in ("send", "receive", "delete"):
                label = f"{phase} ({'single' if batch == 1 else 'batch of 10'})"
                print(f"{label:<22}{ours[phase]:>16.0f}{theirs[phase]:>12.0f}{ours[phase] / theirs[phase]:>8.2f}")
    finally:
        moto.terminate()
        moto.wait(10)
        gateway.stop()
        nats_server.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
