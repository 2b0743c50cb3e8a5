"""SQS-style queues: ``q = client.queue("orders")``; send, receive, delete, visibility, queue admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

Request = Callable[..., Awaitable[Any]]  # (method, path, **httpx options) -> decoded answer, with the client's token

LONG_POLL_SLACK = 10.0  # seconds a receive request may take beyond its wait


@dataclass(frozen=True, slots=True)
class SentMessage:
    message_id: str
    md5_of_body: str
    seq: int


@dataclass(slots=True)
class QueueMessage:
    """A received message: ``body``, ``attributes``, ``receive_count``; ``delete()`` when done."""

    queue: Queue = field(repr=False)
    message_id: str
    receipt_handle: str = field(repr=False)
    body: str
    md5_of_body: str
    attributes: dict[str, str]
    receive_count: int
    sent_at: str | None

    @classmethod
    def from_json(cls, queue: Queue, body: dict[str, Any]) -> QueueMessage:
        return cls(
            queue,
            str(body["message_id"]),
            str(body["receipt_handle"]),
            str(body["body"]),
            str(body.get("md5_of_body", "")),
            dict(body.get("attributes") or {}),
            int(body.get("receive_count", 1)),
            body.get("sent_at"),
        )

    async def delete(self) -> None:
        await self.queue.delete_message(self.receipt_handle)

    async def release(self, delay: int = 0) -> None:
        """Give the message back: visible again after ``delay`` seconds (0 = now)."""
        await self.change_visibility(delay)

    async def change_visibility(self, timeout: int) -> None:
        await self.queue._request(
            "PATCH", f"/messages/{quote(self.receipt_handle, safe='')}", json={"visibility_timeout": timeout}
        )


class Queue:
    """One queue of the client's namespace (``client.queue(name)``)."""

    def __init__(self, request: Request, name: str) -> None:
        self._request_any = request
        self.name = name

    async def _request(self, method: str, suffix: str = "", **kwargs: Any) -> Any:
        return await self._request_any(method, f"/api/v1/queues/{quote(self.name, safe='')}{suffix}", **kwargs)

    async def send(
        self, body: str, *, delay_seconds: int | None = None, attributes: dict[str, str] | None = None
    ) -> SentMessage:
        payload: dict[str, Any] = {"body": body}
        if delay_seconds is not None:
            payload["delay_seconds"] = delay_seconds
        if attributes:
            payload["attributes"] = attributes
        answer = await self._request("POST", "/messages", json=payload)
        return SentMessage(answer["message_id"], answer.get("md5_of_body", ""), int(answer.get("seq", 0)))

    async def send_batch(self, entries: list[str | dict[str, Any]]) -> dict[str, Any]:
        """Up to 10 messages: strings, or dicts with ``body`` (and ``id``, ``delay_seconds``, ``attributes``)."""
        batch = []
        for i, entry in enumerate(entries):
            item = {"body": entry} if isinstance(entry, str) else dict(entry)
            item.setdefault("id", str(i))
            batch.append(item)
        answer: dict[str, Any] = await self._request("POST", "/messages/batch", json={"entries": batch})
        return answer

    async def receive(
        self, *, max: int = 1, wait: int = 0, visibility_timeout: int | None = None
    ) -> list[QueueMessage]:
        body: dict[str, Any] = {"max": max, "wait": wait}
        if visibility_timeout is not None:
            body["visibility_timeout"] = visibility_timeout
        answer = await self._request("POST", "/messages/receive", json=body, timeout=wait + LONG_POLL_SLACK)
        return [QueueMessage.from_json(self, m) for m in answer.get("messages", [])]

    async def messages(
        self, *, wait: int = 20, max: int = 10, visibility_timeout: int | None = None
    ) -> AsyncIterator[QueueMessage]:
        """Receive forever with long polls of ``wait`` seconds; delete each message when done with it."""
        while True:
            for message in await self.receive(max=max, wait=wait, visibility_timeout=visibility_timeout):
                yield message

    async def delete_message(self, receipt_handle: str) -> None:
        await self._request("DELETE", f"/messages/{quote(receipt_handle, safe='')}")

    async def create(self, **attributes: Any) -> dict[str, Any]:
        """Create the queue, or update its attributes (``visibility_timeout``, ``redrive_policy``...)."""
        answer: dict[str, Any] = await self._request("PUT", json=attributes)
        return answer

    async def attributes(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET")
        return answer

    async def purge(self) -> None:
        await self._request("POST", "/purge")

    async def delete(self) -> None:
        await self._request("DELETE")
