"""A real HTTP receiver for webhook tests: a small ASGI app under uvicorn on a free port, in the test's loop.

Each path is an endpoint with a ``Behaviour`` (what to answer to which
attempt); every request is recorded with its headers, body and the client's
address, and waiters are woken when requests arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tests.harness import free_port


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    hold: asyncio.Event | None = None  # answer only once set


Behaviour = Callable[[Request, int], Answer]  # (request, how many requests this path had before it) -> answer


def always_ok(_request: Request, _count: int) -> Answer:
    return Answer()


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: dict[str, list[Request]] = {}
        self._changed = asyncio.Condition()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender gave up before the request was complete
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request = Request(scope["path"], headers, b"".join(chunks), scope["client"][1], time.monotonic())
        seen = self.requests.setdefault(request.path, [])
        answer = self.behaviours.get(request.path, always_ok)(request, len(seen))
        seen.append(request)
        async with self._changed:
            self._changed.notify_all()
        if answer.hold is not None:
            await answer.hold.wait()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def start(self) -> Receiver:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
