"""End-to-end: token, publish and SSE through the real gateway on a real nats-server."""

from __future__ import annotations

import httpx

from tests.harness import Gateway


def test_publish_reaches_sse_subscriber(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        with client.stream("GET", "/api/v1/subscribe", params={"topic": "notifications"}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            answer = client.post("/api/v1/publish", json={"topic": "notifications", "message": "Hello World!"})
            assert answer.status_code == 200, answer.text
            seq = answer.json()["seq"]
            received = []
            for line in lines:
                if line.startswith("id: "):
                    received.append(int(line[4:]))
                    break
            assert received == [seq]
