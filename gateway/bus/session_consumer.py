"""One persistent MQTT session's durable pull consumer on the message stream.

The consumer covers the session's whole namespace; the session matches each
message against its subscriptions locally (one consumer keeps one order across
subscriptions, and subscriptions change without touching the consumer). Each
message is acknowledged once the client completed it (PUBACK, PUBCOMP, or at
send for QoS 0), so what was not acknowledged survives a disconnect, a gateway
restart or a move to another replica.

Resuming a session whose consumer holds unacknowledged messages recreates it
from the acknowledgement floor, so they are redelivered at once instead of
after an ack wait [MQTT-4.4.0-1]; messages up to the old delivered sequence are
flagged as redeliveries (the MQTT DUP flag).

The consumer is created (``create``) before it is pulled from (``start``): an
MQTT session's consumer exists from its CONNACK on, and delivers only after it.

Flow control is by credit: ``want(n)`` says how many more messages the
connection can take, and one pull request at a time asks for that many.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from gateway.bus.core import Bus
from gateway.bus.subscriptions import to_delivery
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, InvalidName, NotFound
from gateway.payload import Delivery

log = logging.getLogger("flowgate.mqtt.store")

PULL_EXPIRES = 5.0
ACK_WAIT = 3600.0
MAX_ACK_PENDING = 20_000


@dataclass(frozen=True, slots=True)
class SessionMessage:
    delivery: Delivery
    ack_subject: str
    redelivered: bool


OnSessionMessage = Callable[[SessionMessage], None]


async def keep_for(bus: Bus, stream: str, name: str, expiry: float, info: api.ConsumerInfo | None = None) -> None:
    """Make the durable consumer ``name`` outlive its last reader by ``expiry`` seconds (its inactive
    threshold), when it exists and has another: a session resumed or ended with a new Session Expiry
    Interval keeps that one [3.1.2.11.2, 3.14.2.2.2]. An expiry of 0 leaves it as it is (that session is
    deleted when its connection closes)."""
    if expiry <= 0:
        return
    try:
        if info is None:
            with nats_errors(f"read consumer {name}"):
                info = await bus.js.consumer_info(stream, name)
        if info.config.inactive_threshold == expiry:
            return
        info.config.inactive_threshold = expiry
        with nats_errors(f"update consumer {name}"):
            await bus.js.add_consumer(stream, config=info.config)
    except NotFound:
        pass


class SessionConsumer:
    def __init__(self, bus: Bus, stream: str, name: str, subject: str, on_message: OnSessionMessage) -> None:
        self._bus = bus
        self.stream = stream
        self.name = name
        self.subject = subject
        self._on_message = on_message
        self.redeliver_upto = 0
        self._sub: Subscription | None = None
        self._inbox = ""
        self._wanted = 0
        self._outstanding = 0
        self._requested_at = 0.0
        self._wake = asyncio.Event()
        self._acks: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def create(self, *, expiry: float, fresh_start: int) -> None:
        """Make sure the durable consumer exists, without pulling from it yet (``start``).

        Created from ``fresh_start`` (a stream sequence) when there is none; one holding unacknowledged
        messages is recreated from its acknowledgement floor; ``expiry``: seconds it outlives its last pull.
        """
        js = self._bus.js
        try:
            with nats_errors(f"read consumer {self.name}"):
                info = await js.consumer_info(self.stream, self.name)
        except NotFound:
            info = None
        start = fresh_start
        if info is not None:
            log.debug(
                "session consumer %s: delivered=%s ack_floor=%s ack_pending=%s",
                self.name, info.delivered, info.ack_floor, info.num_ack_pending,
            )  # fmt: skip
        if info is not None and (info.num_ack_pending or 0) > 0:
            # Redeliver now what the previous connection left unacknowledged [MQTT-4.4.0-1].
            self.redeliver_upto = info.delivered.stream_seq if info.delivered else 0
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            start = max((floor or 0) + 1, info.config.opt_start_seq or 1)
            with nats_errors(f"reset consumer {self.name}"):
                await js.delete_consumer(self.stream, self.name)
            info = None
        if info is not None:
            await keep_for(self._bus, self.stream, self.name, expiry, info)
        if info is None:
            config = api.ConsumerConfig(
                name=self.name,
                durable_name=self.name,
                filter_subject=self.subject,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_ack_pending=MAX_ACK_PENDING,
                max_deliver=-1,
                inactive_threshold=expiry,
            )
            with nats_errors(f"create consumer {self.name}"):
                await js.add_consumer(self.stream, config=config)

    async def start(self, window: int) -> None:
        """Receive the consumer's messages on an inbox and start pulling ``window`` of them."""
        nc = self._bus.nc
        self._inbox = nc.new_inbox()
        with nats_errors("subscribe to session deliveries"):
            self._sub = await nc.subscribe(self._inbox, cb=self._on_msg)
        self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"mqtt-pull-{self.name}")
        self.want(window)

    def want(self, count: int) -> None:
        """The connection can take ``count`` more messages now."""
        self._wanted = max(0, count)
        if self._wanted and not self._outstanding:
            self._wake.set()

    def ack(self, ack_subject: str) -> None:
        """Acknowledge a message (sent by the pump, batched with others)."""
        self._acks.append(ack_subject)
        self._wake.set()

    async def _send_acks(self) -> None:
        acks, self._acks = self._acks, []
        nc = self._bus.nc
        with nats_errors("acknowledge session messages"):
            for subject in acks:
                await nc.publish(subject, b"")

    async def _pump(self) -> None:
        nc = self._bus.nc
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}"
        expires_ns = int(PULL_EXPIRES * 1e9)
        while not self._closed:
            try:
                async with asyncio.timeout(PULL_EXPIRES + 2):
                    await self._wake.wait()
            except TimeoutError:
                if self._outstanding and time.monotonic() - self._requested_at > PULL_EXPIRES + 1:
                    self._outstanding = 0  # the request was lost (NATS restart): ask again
            self._wake.clear()
            if self._acks:
                try:
                    await self._send_acks()
                except FlowGateError as exc:
                    log.warning("acknowledgements for %s lost: %s (they will be redelivered)", self.name, exc.message)
            if self._outstanding or not self._wanted or self._closed:
                continue
            batch = self._wanted
            self._outstanding = batch
            self._requested_at = time.monotonic()
            body = b'{"batch":%d,"expires":%d}' % (batch, expires_ns)
            try:
                with nats_errors("request session messages"):
                    await nc.publish(request_subject, body, reply=self._inbox)
            except FlowGateError as exc:
                log.warning("pull request for %s failed: %s", self.name, exc.message)
                self._outstanding = 0
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and "Status" in headers:
            # 408 request expired, 409 consumer changed or limits, 404 no messages: the request is over.
            self._outstanding = 0
            self._wake.set()
            return
        if self._outstanding:
            self._outstanding -= 1
            if not self._outstanding:
                self._wake.set()
        try:
            delivery = to_delivery(msg)
        except (InvalidName, ValueError):
            log.warning("skipping message with unparseable subject %r", msg.subject)
            self.ack(msg.reply)
            return
        redelivered = delivery.seq <= self.redeliver_upto or msg.metadata.num_delivered > 1
        self._on_message(SessionMessage(delivery, msg.reply, redelivered))

    async def stop(self) -> None:
        """Stop pulling; the durable consumer and its unacknowledged messages stay for the next connection."""
        self._closed = True
        if self._acks:
            try:
                await self._send_acks()
                with nats_errors("flush acknowledgements"):
                    await self._bus.nc.flush(timeout=2)  # the next connection must see them applied
            except FlowGateError:
                log.debug("final acknowledgements of %s lost", self.name)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                with nats_errors("unsubscribe session deliveries"):
                    await sub.unsubscribe()
            except FlowGateError:
                log.debug("unsubscribe of %s failed", self.name)
