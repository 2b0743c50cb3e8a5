"""JetStream publish acknowledgements, resolved straight from nats-py's parser.

Pipelined publishing (``Bus.send``) sends each message with a reply subject
``<inbox>.<token>`` and waits on a future per token. Through an ordinary
nats-py subscription every acknowledgement would cost a parsed header dict, a
``Msg``, a put on the subscription's queue, a wake-up of its task and an
awaited callback: most of the cost of an acknowledged publish in Python.

``AckClient`` is nats-py's ``Client`` with ``FastParser`` (parser.py) as its
parser and a synchronous ``_dispatch_fast`` that it tries first for each
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import orjson
from nats.aio.client import Client

from gateway.bus.direct import DirectQueue
from gateway.bus.parser import FastParser
from gateway.errors import BadRequest, FlowGateError, Unavailable

log = logging.getLogger("flowgate.bus")

AckHandler = Callable[[bytes, bytes, bytes | None], None]  # (subject, body, raw header block or None)


@dataclass(slots=True)
class PubAck:
    """JetStream stored a message (treat as immutable; not frozen, which costs twice as much per message)."""

    seq: int
    duplicate: bool


Settle = Callable[[PubAck | None, FlowGateError | None], None]  # (ack, None) once stored, or (None, error)
Pending = asyncio.Future[PubAck] | Settle
Retry = Callable[[int, Pending, bytes], bool]  # (token, pending publish, its encoded command) -> taken over


HEADER_CACHE_SIZE = 256


class AckClient(Client):
    """nats-py's client, with acknowledgements for one subscription id dispatched synchronously.

    It also remembers parsed header blocks: the stream's messages carry a
    handful of distinct ones (``Fg-Type`` and ``Fg-QoS``), so most messages
    get a copy of an already parsed dict instead of a parse.
    """

    _ack_sid = -1
    _ack_handler: AckHandler | None = None

    def __init__(self) -> None:
        super().__init__()
        self._ps = FastParser(self)
        self._header_cache: dict[bytes, dict[str, str]] = {}
        self._last_replies: dict[int, bytes] = {}  # sid -> reply of the last message dispatched fast

    def route_acks(self, sid: int, handler: AckHandler) -> None:
        """Hand every message of subscription ``sid`` to ``handler`` instead of the subscription."""
        self._ack_sid = sid
        self._ack_handler = handler

    def _dispatch_fast(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> bool:
        """Handle a message synchronously if nats-py would do nothing more than count and deliver it.

        False leaves the message to ``_process_msg``, untouched: status messages
        (heartbeats, flow control), a consumer sequence gap (nats-py resets the
        ordered consumer), subscriptions not delivered raw, auto-unsubscribing
        or request subscriptions, anything unexpected.
        """
        if sid == self._ack_sid:
            handler = self._ack_handler
            if handler is None:
                return False
            handler(subject, data, headers)
            return True
        sub = self._subs.get(sid)
        if sub is None:
            return False
        queue = sub._pending_queue
        if type(queue) is not DirectQueue or sub._max_msgs > 0 or sub._future is not None:
            return False
        raw = queue.raw
        if raw is None:
            return False
        if headers is not None and (not data or headers[8:9] == b" "):
            return False  # an inline status (NATS/1.0 100 ...) or what nats-py could take for a control message
        size = len(data)
        if 0 < sub._pending_bytes_limit <= size:
            return False  # nats-py reports the slow consumer
        jsi = sub._jsi
        if jsi is None:  # a core subscription: no stream position, "stored" as it arrives
            sseq, stamp = 0, time.time_ns()
        else:
            # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stamp ns>.<pending>
            tokens = reply.split(b".")
            if len(tokens) != 9 or tokens[0] != b"$JS" or tokens[1] != b"ACK":
                return False
            try:
                sseq = int(tokens[5])
                dseq = int(tokens[6])
                stamp = int(tokens[7])
            except ValueError:
                return False
            if jsi._ordered:
                if dseq != jsi._dseq:
                    return False  # a gap: nats-py recreates the consumer
                jsi._sseq = sseq
                jsi._dseq = dseq + 1
            jsi._active = True
            jsi._fciseq += 1  # JetStreamContext._JSI.track_sequences, with _cmeta decoded only when read
            self._last_replies[sid] = reply
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += size
        sub._received += 1
        try:
            raw(subject, sseq, stamp, data, headers)
        except Exception:  # a bug in a handler: keep the connection and the other subscriptions going
            log.exception("delivery handler failed for a message on %r", subject)
        return True

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._last_replies.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if sid == self._ack_sid and self._ack_handler is not None:
            self._ack_handler(subject, data, headers)
            return
        last_reply = self._last_replies.pop(sid, None)
        if last_reply is not None:  # nats-py reads _cmeta (the last data message's reply) on a heartbeat
            sub = self._subs.get(sid)
            if sub is not None and sub._jsi is not None:
                sub._jsi._cmeta = last_reply.decode()
        await super()._process_msg(sid, subject, reply, data, cast(bytes, headers))  # annotated bytes, may be None

    async def _process_headers(self, headers: bytes | None) -> dict[str, str] | None:
        if not headers:
            return None
        cache = self._header_cache
        parsed = cache.get(headers)
        if parsed is not None:
            return parsed.copy()  # a copy: a receiver may change its message's headers
        parsed = await super()._process_headers(headers)
        if parsed is not None:
            if len(cache) >= HEADER_CACHE_SIZE:
                cache.clear()  # e.g. per-message ids or heartbeats: start over rather than grow
            cache[headers] = parsed.copy()
        return parsed


def _status(headers: bytes | None) -> str:
    """The inline status of a header block (``NATS/1.0 503\\r\\n...``), or ``""``."""
    if not headers:
        return ""
    line = headers.split(b"\r\n", 1)[0]
    return line[9:12].decode("ascii", "replace") if line[8:9] == b" " else ""


class AckInbox:
    """Pending acknowledged publishes by token, resolved from raw acknowledgement messages.

    A pending publish is a future (``Bus.send_now``) or a plain ``Settle``
    callback (``Bus.send_then``), which is called at once with the result:
    no future, no scheduled callback, per message on a front-end's hot path.
    """

    __slots__ = ("_prefix_len", "frames", "pending", "prefix", "retry")

    def __init__(self, prefix: str = "", retry: Retry | None = None) -> None:
        self.pending: dict[int, Pending] = {}
        self.frames: dict[int, bytes] = {}  # the encoded command of each pending publish, to send it again
        self.prefix = prefix  # the reply subjects are "<prefix><token>"
        self._prefix_len = len(prefix)
        # Called for a publish no stream took (no responders, or JetStream's 503 while a stream has no
        # leader): the message was not stored, so sending it again cannot duplicate it. True: it will be.
        self.retry = retry

    def set_prefix(self, prefix: str) -> None:
        self.prefix = prefix
        self._prefix_len = len(prefix)

    def on_message(self, subject: bytes, body: bytes, headers: bytes | None) -> None:
        """One acknowledgement from JetStream (or a status message); unknown or late tokens are ignored."""
        try:
            token = int(subject[self._prefix_len :])
        except ValueError:
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
