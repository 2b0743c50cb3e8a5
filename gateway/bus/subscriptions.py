"""Ordered, gap-free delivery from the message stream, live or from a sequence.

A ``LiveSubscription`` is a JetStream ordered consumer (ephemeral, in memory,
flow-controlled, heartbeated). nats-py recreates it from the next expected
stream sequence when it detects a gap or missed heartbeats, which is also how
it survives a NATS restart: the subscriber sees every message once, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, InvalidName
from gateway.payload import QOS_HEADER, Delivery, Payload
from gateway.topics import parse_subject

log = logging.getLogger("flowgate.bus")

OnDelivery = Callable[[Delivery], None]


def to_delivery(msg: Msg) -> Delivery:
    meta = msg.metadata
    namespace, topic = parse_subject(msg.subject)
    return Delivery(
        seq=meta.sequence.stream,
        namespace=namespace,
        topic=topic,
        payload=Payload.from_headers(msg.data, msg.headers),
        published_at=meta.timestamp,
        qos=_qos(msg.headers),
    )


def _qos(headers: dict[str, str] | None) -> int:
    raw = headers.get(QOS_HEADER) if headers else None
    return int(raw) if raw in ("0", "1", "2") else 1


class LiveSubscription:
    def __init__(self, subject_filter: str, on_delivery: OnDelivery) -> None:
        self.subject_filter = subject_filter
        self._on_delivery = on_delivery
        self._sub: JetStreamContext.PushSubscription | None = None
        self.last_seq = 0

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
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
                idle_heartbeat=2.0,
            )

    async def _on_msg(self, msg: Msg) -> None:
        try:
            delivery = to_delivery(msg)
        except (InvalidName, ValueError):
            log.warning("skipping message with unparseable subject %r", msg.subject)
            return
        self.last_seq = delivery.seq
        self._on_delivery(delivery)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            with nats_errors("unsubscribe"):
                await sub.unsubscribe()
        except FlowGateError:  # the consumer is ephemeral: the server drops it by itself
            log.debug("unsubscribe of %s failed", self.subject_filter, exc_info=True)
