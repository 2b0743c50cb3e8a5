"""A thin synchronous facade for scripts: the async ``Client`` run on a private event loop.

::

    from flowgate_client.sync import Client

    with Client("http://localhost:8080", api_key=KEY, app="myapp") as client:
        seq = client.publish("sensors/1", {"t": 21.5})
        for msg in client.subscribe("sensors/+", since=0, count=10):
            print(msg.data)

The loop only runs inside a call, so a subscription reads its socket while it is iterated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

from flowgate_client import client as aio
from flowgate_client.models import Message
from flowgate_client.queues import QueueMessage, SentMessage


class Client:
    def __init__(self, base_url: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client: aio.Client = self._runner.run(_make(base_url, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def publish(self, topic: str, message: Any, *, idempotency_key: str | None = None) -> int:
        return self._runner.run(self._client.publish(topic, message, idempotency_key=idempotency_key))

    def token(self) -> str:
        return self._runner.run(self._client.token()).token

    def usage(self) -> dict[str, Any]:
        return self._runner.run(self._client.usage())

    def subscribe(self, *filters: str, since: int | None = None, count: int | None = None) -> Iterator[Message]:
        """Messages of the filters, ``count`` of them (or forever)."""
        sub = self._client.subscribe(*filters, since=since)
        self._runner.run(sub.start())
        iterator = aiter(sub)
        try:
            received = 0
            while count is None or received < count:
                yield self._runner.run(_next(iterator))
                received += 1
        finally:
            self._runner.run(sub.close())

    def send(self, queue: str, body: str, **options: Any) -> SentMessage:
        return self._runner.run(self._client.queue(queue).send(body, **options))

    def receive(self, queue: str, **options: Any) -> list[QueueMessage]:
        return self._runner.run(self._client.queue(queue).receive(**options))

    def delete(self, message: QueueMessage) -> None:
        self._runner.run(message.delete())


async def _next(iterator: AsyncIterator[Message]) -> Message:
    return await anext(iterator)


async def _make(base_url: str, options: dict[str, Any]) -> aio.Client:
    return aio.Client(base_url, **options)  # built inside the loop that will run it
