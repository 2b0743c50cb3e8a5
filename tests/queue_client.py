"""A small synchronous client of the queue HTTP API, for the queue tests and the benchmark."""

from __future__ import annotations

from typing import Any

import httpx


class QueueClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def send(self, queue: str, body: Any, **fields: Any) -> httpx.Response:
        return self.http.post(f"/api/v1/queues/{queue}/messages", json={"body": body, **fields})

    def send_ok(self, queue: str, body: Any, **fields: Any) -> dict[str, Any]:
        response = self.send(queue, body, **fields)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def receive(self, queue: str, **params: Any) -> httpx.Response:
        return self.http.get(f"/api/v1/queues/{queue}/messages", params=params)

    def receive_ok(self, queue: str, **params: Any) -> list[dict[str, Any]]:
        response = self.receive(queue, **params)
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])

    def delete(self, queue: str, handle: str) -> httpx.Response:
        return self.http.delete(f"/api/v1/queues/{queue}/messages/{handle}")

    def visibility(self, queue: str, handle: str, seconds: Any) -> httpx.Response:
        return self.http.patch(f"/api/v1/queues/{queue}/messages/{handle}", json={"visibility_timeout": seconds})

    def put(self, queue: str, **attributes: Any) -> httpx.Response:
        return self.http.put(f"/api/v1/queues/{queue}", json=attributes)

    def info(self, queue: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/queues/{queue}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def counts(self, queue: str) -> tuple[int, int, int]:
        info = self.info(queue)
        return info["approximate_visible"], info["approximate_in_flight"], info["approximate_delayed"]
