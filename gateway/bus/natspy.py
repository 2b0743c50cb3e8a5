"""The one module that touches nats-py's private names, and the start-up check that they exist.

The bus avoids nats-py's per-message overhead by working beside its client:
acknowledgements and raw deliveries dispatched synchronously from the parser
(``FastClient._dispatch_fast``), publish frames appended to the client's
outgoing buffer (``append``), a subscription's queue swapped for a direct
hand-off (``deliver_directly``), header blocks parsed by nats-py's own helper
(``parse_header_lines``). Every underscore name of nats-py the gateway relies
on is used here and listed in ``REQUIRED``; ``check_natspy`` (called once when
the bus connects) fails with the installed version and the missing names when
a nats-py release no longer has one, instead of breaking gap repair silently.
A test (tests/test_natspy_seam.py) fails if any other module of ``gateway/``
uses one of these names.

Hot paths stay as they were: the per-message code that touches private fields
(``FastClient._dispatch_fast``, ``append``, ``DirectQueue.put_nowait``) lives
here as is, and the other modules call these functions or bind them once
(``outgoing.append`` is this module's function), so no extra call is paid per
message. Cold paths (set-up, limits, ping/pong) go through small accessors.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.protocol.parser import Parser

log = logging.getLogger("flowgate.bus")

AckHandler = Callable[[bytes, bytes, bytes | None], None]  # (subject, body, raw header block or None)
MsgHandler = Callable[[Msg], None]
RawHandler = Callable[[bytes, int, int, bytes, bytes | None], None]  # (subject, stream seq, stored ns, body, headers)

HEADER_CACHE_SIZE = 256

# What the gateway relies on, by owner: "class" names are looked up on the class, "instance" names on a
# throwaway object (nats-py builds a Client and a Subscription without connecting), "source" names are
# assigned as ``self.<name>`` in the class's source (objects nats-py only builds while subscribing).
REQUIRED: dict[str, tuple[str, tuple[str, ...]]] = {
    "Client": (
        "class",
        (
            "_parse_header_lines",
            "_process_msg",
            "_process_headers",
            "_process_ping",
            "_process_pong",
            "_remove_sub",
            "_flush_pending",
        ),
    ),
    "Client()": (
        "instance",
        ("_subs", "_ps", "_pending", "_pending_data_size", "_flush_queue", "_max_pending_size", "_max_payload"),
    ),
    "Subscription()": (
        "instance",
        ("_id", "_pending_queue", "_pending_size", "_max_msgs", "_future", "_pending_bytes_limit", "_jsi", "_received"),
    ),
    "JetStreamContext.PushSubscription": ("source", ("_sub",)),
    "JetStreamContext._JSI": ("source", ("_ordered", "_dseq", "_sseq", "_active", "_fciseq", "_cmeta")),
}


class NatsPyMismatch(RuntimeError):
    """The installed nats-py lacks internals the gateway relies on."""


def natspy_version() -> str:
    try:
        return version("nats-py")
    except PackageNotFoundError:
        return "unknown"


def missing_internals() -> list[str]:
    """``Owner.name`` for each name of ``REQUIRED`` the installed nats-py does not have."""
    owners: dict[str, Any] = {
        "Client": Client,
        "Client()": Client(),
        "Subscription()": Subscription(Client()),
        "JetStreamContext.PushSubscription": JetStreamContext.PushSubscription,
        "JetStreamContext._JSI": getattr(JetStreamContext, "_JSI", None),
    }
    missing: list[str] = []
    for owner, (how, names) in REQUIRED.items():
        target = owners[owner]
        if target is None:
            missing.extend(f"{owner}.{name}" for name in names)
            continue
        if how == "source":
            try:
                source = inspect.getsource(target)
            except (OSError, TypeError):
                source = ""
            missing.extend(f"{owner}.{name}" for name in names if f"self.{name} " not in source)
        else:
            missing.extend(f"{owner}.{name}" for name in names if not hasattr(target, name))
    return missing


def check_natspy() -> None:
    """Fail with a clear message if the installed nats-py lacks what this module uses."""
    missing = missing_internals()
    if missing:
        raise NatsPyMismatch(
            f"nats-py {natspy_version()} lacks internals Flow-Gate relies on ({', '.join(missing)}); "
            "install the version pyproject.toml pins (nats-py>=2.16,<2.17)"
        )


# --- cold-path accessors ---------------------------------------------------------------------------


def parse_header_lines(lines: bytes) -> dict[str, str] | None:
    """nats-py's parse of the header lines after ``NATS/1.0\\r\\n`` (no inline status)."""
    return cast("dict[str, str] | None", Client._parse_header_lines(lines))


def subscription_id(sub: Subscription) -> int:
    return sub._id


def inner_subscription(sub: JetStreamContext.PushSubscription) -> Subscription:
    """The core subscription a JetStream push subscription delivers through (an ordered consumer reset
    keeps the object and gives it a new id)."""
    return sub._sub


def max_payload(nc: Client) -> int:
    """The server's ``max_payload`` as the client learnt it at connect."""
    return nc._max_payload


def use_parser(nc: Client, parser: Parser) -> None:
    nc._ps = parser


def process_msg(nc: Client, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> Awaitable[None]:
    """nats-py's full handling of one message (what the parser awaits when fast dispatch declines)."""
    return nc._process_msg(sid, subject, reply, data, cast(bytes, hdr))


def process_ping(nc: Client) -> Awaitable[None]:
    return nc._process_ping()


def process_pong(nc: Client) -> Awaitable[None]:
    return nc._process_pong()


async def drain(nc: Client) -> None:
    """Force the pending buffer out, as nats-py does when a publish overfills it."""
    await nc._flush_pending(force_flush=True)


# --- hot paths ------------------------------------------------------------------------------------


def append(nc: Client, command: bytes, body_size: int, messages: int = 1) -> bool:
    """Append encoded commands (``messages`` publishes) to ``nc``'s pending buffer and wake its flusher, as
    ``Client.publish`` does.

    True when the buffer is over its limit (drain it).
    """
    nc._pending.append(command)
    nc._pending_data_size += len(command)
    stats = nc.stats
    stats["out_msgs"] += messages
    stats["out_bytes"] += body_size
    flush_queue = nc._flush_queue
    if flush_queue is not None and flush_queue.empty():
        # What Client._flush_pending does: one wake-up of the flusher task for everything queued until it runs.
        flush_queue.put_nowait(asyncio.get_running_loop().create_future())
    return 0 < nc._max_pending_size < nc._pending_data_size


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


class FastClient(Client):
    """nats-py's client, with acknowledgements for one subscription id dispatched synchronously.

    It also remembers parsed header blocks: the stream's messages carry a
    handful of distinct ones (``Fg-Type`` and ``Fg-QoS``), so most messages
    get a copy of an already parsed dict instead of a parse.
    """

    _ack_sid = -1
    _ack_handler: AckHandler | None = None

    def __init__(self) -> None:
        super().__init__()
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
