"""``deliver_directly``: a subscription's queued messages first, then each new one at once, in order."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import cast

import pytest
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.bus.direct import deliver_directly


def _msg(n: int) -> Msg:
    return Msg(None, subject=f"s.{n}", data=b"x" * n)  # type: ignore[arg-type]


async def test_queued_messages_come_first_then_new_ones_directly(caplog: pytest.LogCaptureFixture) -> None:
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    sub = SimpleNamespace(_pending_queue=queue, _pending_size=0)
    for n in (1, 2):
        queue.put_nowait(_msg(n))
        sub._pending_size += n  # as nats-py counts a queued message
    seen: list[str] = []

    def handler(msg: Msg) -> None:
        if msg.subject == "s.4":
            raise RuntimeError("bug in a sink")
        seen.append(msg.subject)

    deliver_directly(cast(Subscription, sub), handler)
    assert seen == ["s.1", "s.2"] and queue.empty()
    with caplog.at_level(logging.ERROR, logger="flowgate.bus"):
        for n in (3, 4, 5):  # what nats-py's _process_msg does for each parsed message
            sub._pending_size += n
            sub._pending_queue.put_nowait(_msg(n))
    assert seen == ["s.1", "s.2", "s.3", "s.5"]  # the failing message is logged, the others go on
    assert "s.4" in caplog.text
    assert sub._pending_queue.empty() and sub._pending_size == 0  # nothing counts as pending: no slow consumer
