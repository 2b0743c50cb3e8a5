"""Queues across a NATS restart: 503 while it is down, nothing lost, handles still valid after."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.harness import Gateway, NatsServer
from tests.queue_client import QueueClient


def wait_ready(gateway: Gateway, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(gateway.base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("gateway not ready again")


def test_queue_survives_a_nats_restart(
    make_nats: Callable[[], NatsServer], make_gateway: Callable[..., Gateway]
) -> None:
    nats = make_nats()
    gateway = make_gateway(nats.url)
    _, token = gateway.user_token()
    client = QueueClient(gateway.base_url, token, timeout=15)
    client.send_ok("jobs", "before the outage")
    client.send_ok("jobs", "second")
    [held] = client.receive_ok("jobs", visibility_timeout=60)

    nats.stop()
    answer = client.send("jobs", "during the outage")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"

    nats.start()
    wait_ready(gateway)
    deadline = time.monotonic() + 30
    while (answer := client.send("jobs", "after")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    bodies = [m["body"] for m in client.receive_ok("jobs", max=10, wait=2)]
    assert sorted(bodies) == sorted(b for b in ("before the outage", "second", "after") if b != held["body"])
    assert client.delete("jobs", held["receipt_handle"]).status_code == 204  # handles outlive the restart
    assert client.counts("jobs") == (0, 2, 0)
