"""Hand a nats-py subscription's messages to a plain function as they are parsed.

nats-py puts each message of a callback subscription on an asyncio queue and
a task per subscription awaits the callback for it: a queue put, a queue get
and a task switch per message. ``deliver_directly`` swaps that queue for a
``DirectQueue`` whose ``put_nowait`` calls the handler at once, in the
connection's read loop, so messages reach it in the order they were parsed
and nothing is buffered. nats-py's own JetStream bookkeeping (ordered consumer
sequences and resets, flow control, heartbeats) runs before the put and is
unchanged; the subscription object, and so the handler, survives an ordered
consumer reset.

With a ``raw`` handler as well, ``AckClient._dispatch_fast`` (acks.py) hands
a subscription's ordinary data messages to it as the parser's bytes (subject,
body, header block) with the stream sequence and store time read from the
reply subject (for a core subscription: 0 and the arrival time), with no
``Msg`` and no header dict; the messages nats-py has to
look at (heartbeats, flow control, gaps) still come through ``put_nowait``
once nats-py has built a ``Msg`` for them. Handlers must not block. An
exception from one is logged, as nats-py reports a failing callback to its
error callback, rather than let into the parser, where it would tear down the
NATS connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("flowgate.bus")

MsgHandler = Callable[[Msg], None]
RawHandler = Callable[[bytes, int, int, bytes, bytes | None], None]  # (subject, stream seq, stored ns, body, headers)


class DirectQueue(asyncio.Queue[Msg]):
    """Looks like the subscription's pending queue; every message put on it goes straight to the handler."""

    def __init__(self, sub: Subscription, handler: MsgHandler, raw: RawHandler | None = None) -> None:
        super().__init__()
        self._sub = sub
        self._handler = handler
        self.raw = raw

    def put_nowait(self, item: Msg) -> None:
        self._sub._pending_size -= len(item.data)  # what the subscription task does after its get()
        try:
            self._handler(item)
        except Exception:  # a bug in a handler: keep the connection and the other subscriptions going
            log.exception("delivery handler failed for a message on %s", item.subject)


def deliver_directly(sub: Subscription, handler: MsgHandler, raw: RawHandler | None = None) -> None:
    """From now on, give ``sub``'s messages to ``handler`` (or ``raw``) synchronously, after any already queued."""
    queued: asyncio.Queue[Msg] = sub._pending_queue
    direct = DirectQueue(sub, handler, raw)
    sub._pending_queue = direct
    # Messages that arrived while the consumer was being created: in order, before any new one.
    # The subscription's task, if woken for one of them, finds its old queue empty and waits for good.
    while not queued.empty():
        direct.put_nowait(queued.get_nowait())
