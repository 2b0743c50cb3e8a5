"""Waiting in tests when there is no event to await: a condition polled until a deadline.

Prefer an event (an ``asyncio.Event`` set by a callback, a stream's first
bytes, a log line). When the state lives in another process and nothing
announces it (a billing sync, a server's view of a closed connection), poll it
with ``poll`` / ``poll_sync``: they fail with ``what`` and the last value seen
instead of hanging or sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def poll(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, what: str, timeout: float, every: float = 0.05
) -> T:
    """Await ``probe()`` until ``done`` of its value (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        await asyncio.sleep(every)


def poll_sync(
    probe: Callable[[], T], done: Callable[[T], bool], *, what: str, timeout: float, every: float = 0.05
) -> T:
    """``poll`` for blocking code (a thread, a synchronous client)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(every)
