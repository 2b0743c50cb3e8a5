"""JetStream publish acknowledgements, resolved straight from nats-py's parser.

Pipelined publishing (``Outlet.publish_then`` in core.py) sends each message
with a reply subject ``<inbox>.<token>`` and waits on a future (or a callback)
per token. Through an ordinary
nats-py subscription every acknowledgement would cost a parsed header dict, a
``Msg``, a put on the subscription's queue, a wake-up of its task and an
awaited callback: most of the cost of an acknowledged publish in Python.

``AckClient`` is nats-py's ``Client`` with ``FastParser`` (parser.py) as its
parser and a synchronous ``_dispatch_fast`` (``natspy.FastClient``, with the
other uses of nats-py's internals) that it tries first for each
message: messages for the one subscription id registered with ``route_acks``
are handed, as raw bytes, to a plain function, and the data messages of
subscriptions delivered raw (``deliver_directly`` with a ``raw`` handler) go
to that handler after exactly the bookkeeping nats-py's ``_process_msg`` does
for them (statistics, ordered consumer sequences, flow control tracking).
Everything else (status messages such as heartbeats and flow control, a
sequence gap, other subscriptions, reconnects, which re-subscribe under the
same id, draining) is nats-py's own behaviour, and its parsed header blocks are
remembered (the stream's messages repeat a few).
``AckInbox`` keeps the pending futures and resolves them from those bytes:
orjson for the body, the token from the subject, the inline status line for
"no responders" (503), all without a task or a ``Msg`` per acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.bus.natspy import HEADER_CACHE_SIZE, AckHandler, FastClient, use_parser
from gateway.bus.parser import FastParser
from gateway.errors import BadRequest, FlowGateError, Unavailable

log = logging.getLogger("flowgate.bus")

__all__ = ["HEADER_CACHE_SIZE", "AckClient", "AckHandler", "AckInbox", "PubAck", "Settle", "settle"]


@dataclass(slots=True)
class PubAck:
    """JetStream stored a message (treat as immutable; not frozen, which costs twice as much per message)."""

    seq: int
    duplicate: bool


Settle = Callable[[PubAck | None, FlowGateError | None], None]  # (ack, None) once stored, or (None, error)
Pending = asyncio.Future[PubAck] | Settle
Retry = Callable[[int, Pending, bytes], bool]  # (token, pending publish, its encoded command) -> taken over


class AckClient(FastClient):
    """nats-py's client with ``FastParser`` (parser.py) as its parser and ``FastClient``'s synchronous dispatch."""

    def __init__(self) -> None:
        super().__init__()
        use_parser(self, FastParser(self))


def _status(headers: bytes | None) -> str:
    """The inline status of a header block (``NATS/1.0 503\\r\\n...``), or ``""``."""
    if not headers:
        return ""
    line = headers.split(b"\r\n", 1)[0]
    return line[9:12].decode("ascii", "replace") if line[8:9] == b" " else ""


class AckInbox:
    """Pending acknowledged publishes by token, resolved from raw acknowledgement messages.

    A pending publish is a future (``Bus.publish``) or a plain ``Settle``
    callback (``Outlet.publish_then``), which is called at once with the result:
    no future, no scheduled callback, per message on a front-end's hot path.
    """

    __slots__ = ("_prefix_len", "batch_reply", "frames", "pending", "prefix", "retry")

    def __init__(self, prefix: str = "", retry: Retry | None = None) -> None:
        self.pending: dict[int, Pending] = {}
        self.frames: dict[int, bytes] = {}  # the encoded command of each pending publish, to send it again
        self.prefix = prefix  # the reply subjects are "<prefix><token>"
        self._prefix_len = len(prefix)
        # Called for a publish no stream took (no responders, or JetStream's 503 while a stream has no
        # leader): the message was not stored, so sending it again cannot duplicate it. True: it will be.
        self.retry = retry
        # Called for a reply under the prefix that is not a token: a fast batch's (batches.py).
        self.batch_reply: AckHandler | None = None

    def set_prefix(self, prefix: str) -> None:
        self.prefix = prefix
        self._prefix_len = len(prefix)

    def on_message(self, subject: bytes, body: bytes, headers: bytes | None) -> None:
        """One acknowledgement from JetStream (or a status message); unknown or late tokens are ignored."""
        try:
            token = int(subject[self._prefix_len :])
        except ValueError:
            if self.batch_reply is not None:
                self.batch_reply(subject, body, headers)
            return
        entry = self.pending.pop(token, None)
        frame = self.frames.pop(token, None)
        if entry is None:
            return  # timed out, failed at a disconnect, or a duplicate acknowledgement
        if not body:
            if frame is not None and self.retry is not None and self.retry(token, entry, frame):
                return
            status = _status(headers)
            settle(entry, None, Unavailable(f"no stream accepted the message (status {status or 'empty'})"))
            return
        result: PubAck | None = None
        failure: FlowGateError | None = None
        try:
            ack = orjson.loads(body)
            error = ack.get("error")
            if error is None:
                result, failure = PubAck(ack["seq"], ack.get("duplicate", False)), None
            elif error.get("code") == 503:
                if frame is not None and self.retry is not None and self.retry(token, entry, frame):
                    return
                result, failure = None, Unavailable(error.get("description", "JetStream unavailable"))
            else:
                result, failure = None, BadRequest(error.get("description", "rejected by JetStream"))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            result, failure = None, Unavailable(f"unreadable acknowledgement from JetStream: {body[:100]!r}")
        settle(entry, result, failure)

    def fail_all(self, error: FlowGateError) -> None:
        self.frames = {}
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            settle(entry, None, error)


def settle(entry: Pending, ack: PubAck | None, error: FlowGateError | None) -> None:
    """Resolve one pending publish with its acknowledgement or its error (exactly one of them)."""
    if isinstance(entry, asyncio.Future):
        if entry.done():
            return
        if error is not None:
            entry.set_exception(error)
        elif ack is not None:
            entry.set_result(ack)
        return
    try:
        entry(ack, error)
    except Exception:  # a bug in a callback: the other acknowledgements still go through
        log.exception("acknowledgement callback failed")
