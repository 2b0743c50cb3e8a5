"""Queues across a NATS restart: 503 while it is down, nothing lost, handles still valid after."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.harness import Gateway, NatsServer
from tests.queue_client import QueueClient
from tests.waiting import poll_sync


def wait_ready(gateway: Gateway, timeout: float = 30) -> None:
    """/readyz answers 200 again (polled: the gateway's reconnection is inside its process)."""

    def ready() -> int:
        try:
            return httpx.get(gateway.base_url + "/readyz", timeout=2).status_code
        except httpx.TransportError:
            return 0

    poll_sync(ready, lambda status: status == 200, what="gateway ready again", timeout=timeout, every=0.1)


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
    answer = poll_sync(  # retried as a client would until the queue engine is back
        lambda: client.send("jobs", "after"),
        lambda r: r.status_code != 503,
        what="a send after NATS is back",
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    bodies = [m["body"] for m in client.receive_ok("jobs", max=10, wait=2)]
    assert sorted(bodies) == sorted(b for b in ("before the outage", "second", "after") if b != held["body"])
    assert client.delete("jobs", held["receipt_handle"]).status_code == 204  # handles outlive the restart
    assert client.counts("jobs") == (0, 2, 0)
