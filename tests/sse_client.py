"""A small Server-Sent Events reader over httpx, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return orjson.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse a text/event-stream response into events (comments skipped)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields or "event" in fields:
                yield Event(
                    "".join(fields.get("event", ["message"])),
                    "\n".join(fields.get("data", [])),
                    fields["id"][-1] if "id" in fields else None,
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


def reader(response: httpx.Response) -> AsyncIterator[Event]:
    """The one event iterator of a response (a stream can be read only once, so it is kept on the response)."""
    iterator: AsyncIterator[Event] | None = getattr(response, "_sse_events", None)
    if iterator is None:
        iterator = events(response)
        response._sse_events = iterator  # type: ignore[attr-defined]
    return iterator


async def collect(
    response: httpx.Response, count: int, timeout: float = 10, kinds: tuple[str, ...] = ("message",)
) -> list[Event]:
    """The next ``count`` events of the given kinds (fails after ``timeout``)."""
    found: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in reader(response):
            if event.event in kinds:
                found.append(event)
                if len(found) == count:
                    break
    return found
