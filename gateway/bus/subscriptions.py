"""Deliveries from the bus: ordered and gap-free from the message stream, or as core NATS routes them.

A ``LiveSubscription`` is a JetStream ordered consumer (ephemeral, in memory,
flow-controlled, heartbeated). nats-py recreates it from the next expected
stream sequence when it detects a gap or missed heartbeats, which is also how
it survives a NATS restart: the subscriber sees every message once, in order.

Its data messages arrive as the parser's bytes (``deliver_directly`` with a
raw handler) and become a ``Delivery`` without a ``Msg``: the subject's
namespace and topic and the header block's kind and QoS come from small
bounded caches (a stream carries a few subjects and header blocks over and
over), the sequence and store time from the reply subject. Messages nats-py
dispatches itself still come as a ``Msg`` through ``to_delivery``, which
reads them the same way.

A ``CoreSubscription`` is a plain NATS subscription to the stream's subjects:
messages as NATS routes them, whether or not (or before) JetStream stores them,
nothing replayed after a reconnect. The bus's connection does not echo this
process's own publishes to it, so it carries what other replicas and NATS
clients publish; the hub hands local publishes to its core-tier sinks itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from gateway.bus.direct import deliver_directly
from gateway.bus.natspy import inner_subscription, parse_header_lines
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, InvalidName
from gateway.message_meta import MessageMeta, meta_of
from gateway.payload import KIND_HEADER, QOS_HEADER, Delivery, Kind, Payload
from gateway.topics import Namespace, parse_subject

log = logging.getLogger("flowgate.bus")

OnDelivery = Callable[[Delivery], None]

SUBJECT_CACHE_SIZE = 4096
HEADER_CACHE_SIZE = 64

_KINDS = {kind.value: kind for kind in Kind}
_QOS = {"0": 0, "1": 1, "2": 2}


def to_delivery(msg: Msg) -> Delivery:
    """The ``Delivery`` of a stream message, read from its subject, headers and ack reply subject."""
    seq, stored_ns = _position(msg.reply)
    return _delivery_of(msg, seq, stored_ns)


def _delivery_of(msg: Msg, seq: int, stored_ns: int) -> Delivery:
    namespace, topic = parse_subject(msg.subject)
    headers = msg.headers
    if headers:
        kind = headers.get(KIND_HEADER)
        payload = (
            Payload(msg.data, _KINDS[kind], meta_of(headers))
            if kind in _KINDS
            else Payload.from_headers(msg.data, headers)
        )
        qos = _QOS.get(headers.get(QOS_HEADER, ""), 1)
    else:
        payload, qos = Payload.raw(msg.data), 1
    return Delivery(seq, namespace, topic, payload, stored_ns, qos)


def _header_meta(block: bytes) -> tuple[Kind | None, int, MessageMeta | None]:
    """Payload kind (``None``: sniff the body), QoS and message properties of a raw header block, by
    ``to_delivery``'s rules.

    Parsed as nats-py parses a block without an inline status (the only kind the raw path is given).
    """
    headers = parse_header_lines(block[10:]) if len(block) > 10 else None
    if not headers:
        return None, 1, None
    kind = headers.get(KIND_HEADER)
    qos = _QOS.get(headers.get(QOS_HEADER, ""), 1)
    meta = meta_of(headers)
    if kind in _KINDS:
        return _KINDS[kind], qos, meta
    return (Kind.BINARY if kind else None), qos, meta  # as Payload.from_headers: an unknown kind is binary


def _traceparent(block: bytes) -> str | None:
    """The ``traceparent`` of a raw header block (tracing on: the publishing replica put it there)."""
    headers = parse_header_lines(block[10:]) if len(block) > 10 else None
    return headers.get("traceparent") if headers else None


def _position(reply: str) -> tuple[int, int]:
    """Stream sequence and store time (ns) from a JetStream reply subject (what ``msg.metadata`` builds, minus the rest).

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``;
    v2 adds ``<domain>.<account hash>`` after ``$JS.ACK`` and may end with a random token.
    """
    tokens = reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        seq, stamp = tokens[5], tokens[7]
    elif len(tokens) >= 11 and tokens[0] == "$JS" and tokens[1] == "ACK":
        seq, stamp = tokens[7], tokens[9]
    else:
        raise ValueError(f"not a JetStream reply subject: {reply!r}")
    return int(seq), int(stamp)


class _BusSubscription:
    """What both kinds share: a nats-py subscription, messages read into deliveries, ``stop``."""

    _sub: Subscription | None

    def __init__(self, subject_filter: str, on_delivery: OnDelivery) -> None:
        self.subject_filter = subject_filter
        self._on_delivery = on_delivery
        self.last_seq = 0  # of the last message delivered (0 on the core tier, which has no position)
        self._places: dict[bytes, tuple[Namespace, str]] = {}  # subject -> parse_subject()
        self._metas: dict[bytes, tuple[Kind | None, int, MessageMeta | None]] = {}  # header block -> _header_meta()
        self.trace_headers = False  # read a traceparent header into Delivery.trace (tracing on)

    async def _on_queued(self, msg: Msg) -> None:
        """Messages nats-py's task handled before ``deliver_directly`` took over."""
        self._on_msg(msg)

    def _on_msg(self, msg: Msg) -> None:
        try:
            delivery = self._read(msg)
        except (InvalidName, ValueError):
            log.warning("skipping message with unparseable subject %r", msg.subject)
            return
        if self.trace_headers and msg.headers:
            delivery.trace = msg.headers.get("traceparent")
        self._on_delivery(delivery)

    def _read(self, msg: Msg) -> Delivery:
        raise NotImplementedError

    def _on_raw(self, subject: bytes, seq: int, stamp: int, data: bytes, headers: bytes | None) -> None:
        place = self._places.get(subject)
        if place is None:
            try:
                place = parse_subject(subject.decode())
            except (InvalidName, ValueError):
                log.warning("skipping message with unparseable subject %r", subject)
                return
            if len(self._places) >= SUBJECT_CACHE_SIZE:
                self._places.clear()  # many distinct topics: start over rather than grow
            self._places[subject] = place
        if headers is None:
            kind, qos, meta = None, 1, None
        else:
            cached = self._metas.get(headers)
            if cached is None:
                cached = _header_meta(headers)
                if len(self._metas) >= HEADER_CACHE_SIZE:
                    self._metas.clear()
                self._metas[headers] = cached
            kind, qos, meta = cached
        payload = Payload(data, kind, meta)  # kind None: classified if a front-end asks (Payload.kind)
        self.last_seq = seq
        delivery = Delivery(seq, place[0], place[1], payload, stamp, qos)
        if self.trace_headers and headers is not None and b"traceparent" in headers:
            delivery.trace = _traceparent(headers)
        self._on_delivery(delivery)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            with nats_errors("unsubscribe"):
                await sub.unsubscribe()
        except FlowGateError:  # an ephemeral consumer, or the connection's subscription: gone by itself
            log.debug("unsubscribe of %s failed", self.subject_filter, exc_info=True)


class LiveSubscription(_BusSubscription):
    def __init__(self, subject_filter: str, on_delivery: OnDelivery) -> None:
        super().__init__(subject_filter, on_delivery)
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self, js: JetStreamContext, stream: str, start_seq: int | None) -> None:
        """Begin at ``start_seq`` (inclusive), or with the next new message when ``None``."""
        config = api.ConsumerConfig()
        if start_seq is None:
            policy = api.DeliverPolicy.NEW
        else:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(1, start_seq)
        with nats_errors(f"subscribe {self.subject_filter}"):
            self._sub = await js.subscribe(
                self.subject_filter,
                stream=stream,
                cb=self._on_queued,
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
                idle_heartbeat=2.0,
            )
        # Messages go to _on_msg as nats-py parses them, not through its queue and task (direct.py).
        deliver_directly(inner_subscription(self._sub), self._on_msg, self._on_raw)

    def _read(self, msg: Msg) -> Delivery:
        delivery = to_delivery(msg)
        self.last_seq = delivery.seq
        return delivery


class CoreSubscription(_BusSubscription):
    """What others publish on ``subject_filter``, as NATS routes it (sequence 0, stored at arrival)."""

    def __init__(self, subject_filter: str, on_delivery: OnDelivery) -> None:
        super().__init__(subject_filter, on_delivery)
        self._sub: Subscription | None = None

    async def start(self, nc: Client) -> None:
        """Subscribe; returns once the server has the subscription (what is published from then on comes)."""
        with nats_errors(f"subscribe {self.subject_filter}"):
            self._sub = await nc.subscribe(self.subject_filter, cb=self._on_queued)
            deliver_directly(self._sub, self._on_msg, self._on_raw)
            await nc.flush()

    def _read(self, msg: Msg) -> Delivery:
        return _delivery_of(msg, 0, time.time_ns())
