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
once nats-py has built a ``Msg`` for them. The code lives in ``natspy.py``, with
the other uses of nats-py's internals. Handlers must not block. An
exception from one is logged, as nats-py reports a failing callback to its
error callback, rather than let into the parser, where it would tear down the
NATS connection.
"""

from gateway.bus.natspy import DirectQueue, MsgHandler, RawHandler, deliver_directly

__all__ = ["DirectQueue", "MsgHandler", "RawHandler", "deliver_directly"]
