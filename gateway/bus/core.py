"""Connection to NATS, the gateway's streams, and acknowledged publishing.

Publishing is pipelined: each message is a core NATS publish with a reply
subject under one wildcard inbox, and JetStream's acknowledgements resolve
futures by token, straight from nats-py's parser (``acks.py``). Many publishes
share one connection in flight, which is what makes acknowledged publishing
fast in Python (see PERFORMANCE.md).
A publish is answered only after JetStream stored the message; while NATS is
unreachable it fails at once with ``Unavailable`` instead of queueing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from gateway.bus.acks import AckClient, AckInbox, Pending, PubAck, settle
from gateway.bus.batches import FastBatches, acked_command
from gateway.bus.kv import Bucket
from gateway.bus.natspy import check_natspy, max_payload, subscription_id
from gateway.bus.outgoing import OutgoingFrames, append
from gateway.bus.subscriptions import CoreSubscription, LiveSubscription, OnDelivery
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, PayloadTooLarge, Unavailable
from gateway.payload import Payload
from gateway.settings import Settings
from gateway.topics import MESSAGE_SUBJECT_ROOT

log = logging.getLogger("flowgate.bus")

MESSAGES_STREAM = "FG_MESSAGES"
# A publish no stream took (its stream is electing a leader after a node loss) is sent again after
# this long, until its publish timeout: the election then costs latency, not a 503.
RETRY_DELAY = 0.2
FAST_BATCH_SERVER = (2, 14)  # the nats-server release that stores fast batches (batches.py)
_ERR_STREAM_NAME_IN_USE = 10058
_ERR_SUBJECTS_OVERLAP = 10065


class BusState(Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class StreamBounds:
    first_seq: int
    last_seq: int


class Bus:
    """One NATS connection shared by every front-end of the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._inbox_prefix = b""  # b"<inbox>.": acknowledgements come to <inbox>.<token>
        self._tokens = itertools.count(1)
        self._acks = AckInbox(retry=self._retry)  # pending publishes by token
        self._batches = FastBatches(self._acks, self._track, self._retry)
        self._acks.batch_reply = self._batches.on_reply
        self._deadlines: deque[tuple[float, int]] = deque()  # (loop time, token) of sent publishes, oldest first
        self._sweeper: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[BusState], None]] = []
        self._ready = False
        self._frames = OutgoingFrames()
        self._max_bytes = settings.max_message_bytes
        self._publish_timeout = settings.publish_timeout_seconds
        self._trace_headers = settings.otel_traces_exporter != "none"  # deliveries carry the publish's traceparent

    # -- lifecycle -----------------------------------------------------------------

    async def connect(self, servers: list[str], *, name: str = "flowgate", attempts_timeout: float = 30.0) -> None:
        """Connect (retrying for ``attempts_timeout``), then create the streams and buckets needed."""
        check_natspy()  # the installed nats-py has the internals gateway/bus/natspy.py uses, or a clear error
        deadline = asyncio.get_running_loop().time() + attempts_timeout
        while True:
            try:
                nc = AckClient()
                await nc.connect(
                    servers=servers,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, used as seconds
                    connect_timeout=2,
                    ping_interval=10,
                    max_outstanding_pings=2,
                    pending_size=8 * 1024 * 1024,
                    # Core subscriptions (the hub's core tier) never get this process's own
                    # publishes back: the hub hands those to its sinks itself. JetStream deliveries,
                    # acknowledgements and replies come from the server, not as echoes, so are unaffected.
                    no_echo=True,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
                self._nc = nc
                break
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise Unavailable(f"cannot connect to NATS at {','.join(servers)}: {exc}") from exc
                log.warning("NATS not reachable yet at %s (%s); retrying", servers, exc)
                await asyncio.sleep(0.5)
        self._js = self._nc.jetstream(timeout=5)
        self._inbox = self._nc.new_inbox()
        self._inbox_prefix = (self._inbox + ".").encode()
        self._acks.set_prefix(self._inbox + ".")
        with nats_errors("subscribe to acknowledgements"):
            ack_sub = await nc.subscribe(self._inbox + ".>")  # <token>, or a fast batch's longer replies
        nc.route_acks(subscription_id(ack_sub), self._acks.on_message)
        version = nc.connected_server_version
        batching = (version.major, version.minor) >= FAST_BATCH_SERVER  # the server has fast batches
        await self.ensure_stream(
            api.StreamConfig(
                name=MESSAGES_STREAM,
                subjects=[f"{MESSAGE_SUBJECT_ROOT}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_age=float(self.settings.retention_seconds),
                max_bytes=self.settings.retention_bytes,
                duplicate_window=float(self.settings.dedupe_window_seconds),
                num_replicas=self.settings.replicas,
                discard=api.DiscardPolicy.OLD,
                allow_batched=True if batching else None,
            )
        )
        if batching:
            with nats_errors(f"read stream {MESSAGES_STREAM}"):
                info = await self.js.stream_info(MESSAGES_STREAM)
            if info.config.allow_batched:
                self._batches.start(nc, self._inbox)
        limit = self._nc.max_payload
        if self.settings.max_message_bytes + 4096 > limit:
            log.warning(
                "FLOWGATE_MAX_MESSAGE_BYTES=%d is close to the NATS server's max_payload=%d; larger messages get 413",
                self.settings.max_message_bytes,
                limit,
            )
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        self._batches.send()  # a burst still being collected: tracked, so failed below with the rest
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._deadlines.clear()
        self._fail_pending(Unavailable("gateway shutting down"))
        if self._nc is not None and not self._nc.is_closed:
            try:
                with nats_errors("drain"):
                    await self._nc.drain()
            except FlowGateError:
                await self._nc.close()

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context, for other modules of ``gateway.bus`` only."""
        if self._js is None:
            raise Unavailable("message bus not connected")
        return self._js

    @property
    def nc(self) -> Client:
        """The NATS connection, for other modules of ``gateway.bus`` only."""
        if self._nc is None:
            raise Unavailable("message bus not connected")
        return self._nc

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def ready(self) -> bool:
        return self._ready and self.connected

    def add_listener(self, listener: Callable[[BusState], None]) -> None:
        """Be told when the connection drops or comes back."""
        self._listeners.append(listener)

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")
        self._fail_pending(Unavailable("message bus connection lost; the message may not be stored, retry"))
        for listener in self._listeners:
            listener(BusState.DISCONNECTED)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        for listener in self._listeners:
            listener(BusState.CONNECTED)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    def _fail_pending(self, error: FlowGateError) -> None:
        self._acks.fail_all(error)
        self._batches.forget()

    def _retry(self, token: int, entry: Pending, frame: bytes) -> bool:
        """Send a publish that was not stored again shortly (its deadline, kept by ``_sweep``, still holds)."""
        if not self._ready:
            return False
        self._acks.pending[token] = entry
        self._acks.frames[token] = frame
        asyncio.get_running_loop().call_later(RETRY_DELAY, self._resend, token)
        return True

    def _resend(self, token: int) -> None:
        frame = self._acks.frames.get(token)
        nc = self._nc
        if frame is None or token not in self._acks.pending or nc is None or not nc.is_connected:
            return  # settled meanwhile (deadline, disconnect), or the disconnect will fail it
        append(nc, frame, 0)

    # -- streams and buckets ---------------------------------------------------------

    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create a stream, or update it to ``config``; safe when replicas race."""
        js = self.js
        with nats_errors(f"create stream {config.name}"):
            for _ in range(3):
                try:
                    await js.add_stream(config)
                    return
                except nats.js.errors.BadRequestError as exc:
                    # A replica creating the same stream at the same moment can make the server answer
                    # "subjects overlap" rather than "name in use": then it exists now, update it.
                    if exc.err_code not in (_ERR_STREAM_NAME_IN_USE, _ERR_SUBJECTS_OVERLAP):
                        raise
                    failure = exc
                try:
                    await js.update_stream(config)
                    return
                except nats.js.errors.NotFoundError:
                    continue  # deleted between the two calls (or the overlap is another stream's): again
            raise failure  # the subjects overlap with another stream's

    async def bucket(self, name: str, *, history: int = 1, ttl: float | None = None) -> Bucket:
        """Open a KV bucket, creating it on first use (idempotent across replicas)."""
        js = self.js
        with nats_errors(f"open bucket {name}"):
            try:
                kv = await js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=name, history=history, ttl=ttl, replicas=self.settings.replicas, storage=api.StorageType.FILE
                )
        return Bucket(name, kv, js)

    async def stream_bounds(self, stream: str = MESSAGES_STREAM) -> StreamBounds:
        with nats_errors(f"read stream {stream}"):
            info = await self.js.stream_info(stream)
        return StreamBounds(info.state.first_seq, info.state.last_seq)

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: Payload, *, msg_id: str | None = None, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Store one message; return once JetStream acknowledged it (``Outlet.publish_then`` with a future)."""
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        if Outlet(self, subject, headers).publish_then(payload, future, msg_id):
            await self.drain()
        return await future

    def _track(self, entry: Pending) -> int:
        """Register a publish awaiting its acknowledgement; its token names the reply subject."""
        token = next(self._tokens)
        self._acks.pending[token] = entry
        # One timer sweeps every publish's deadline (a timer per message costs more than the publish).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        self._deadlines.append((deadline, token))
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadline, self._sweep)
        return token

    def outlet(self, subject: str, headers: dict[str, str] | None = None, *, batched: bool = False) -> Outlet:
        """Publishing to one subject with one header set, encoded once: the callback way to publish
        (``Outlet.publish_then``), kept by a connection for the subjects it publishes to again and again.

        ``batched``: its acknowledged publishes may be stored in fast batches (batches.py), whose
        acknowledgements carry no stream sequence (``PubAck.seq`` 0), for a publisher that reports none.
        """
        return Outlet(self, subject, headers, batched)

    async def drain(self) -> None:
        """Wait until the outgoing buffer was written (after ``Outlet.publish_then`` said it is overfull)."""
        nc = self._nc
        if nc is not None:
            with nats_errors("flush"):
                await self._frames.drain(nc)

    def _sweep(self) -> None:
        """Fail the publishes whose acknowledgement is overdue, then wait for the next deadline."""
        self._sweeper = None
        deadlines = self._deadlines
        pending = self._acks.pending
        loop = asyncio.get_running_loop()
        now = loop.time()
        while deadlines and deadlines[0][0] <= now:
            _, token = deadlines.popleft()
            entry = pending.pop(token, None)
            if entry is not None:
                self._acks.frames.pop(token, None)
                settle(entry, None, Unavailable("message bus did not acknowledge in time; retry"))
        while deadlines and deadlines[0][1] not in pending:
            deadlines.popleft()  # acknowledged already
        if deadlines:
            self._sweeper = loop.call_at(max(deadlines[0][0], now + 0.05), self._sweep)

    # -- subscribing ---------------------------------------------------------------------

    async def subscribe(
        self, subject_filter: str, on_delivery: OnDelivery, *, start_seq: int | None = None
    ) -> LiveSubscription:
        """Deliver every stored message matching ``subject_filter``, in order, from ``start_seq`` or from now.

        Creating the consumer is tried again in short attempts until the publish timeout: while the
        stream elects a new leader (after a node loss) the request gets no answer, and a single
        attempt would turn the election into a 503 for the subscriber.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        while True:
            remaining = deadline - loop.time()
            sub = LiveSubscription(subject_filter, on_delivery)
            sub.trace_headers = self._trace_headers
            try:
                await sub.start(self.nc.jetstream(timeout=max(0.5, min(2.0, remaining))), MESSAGES_STREAM, start_seq)
                return sub
            except Unavailable:
                if remaining < 0.5 + RETRY_DELAY or not self.connected:
                    raise
                await asyncio.sleep(RETRY_DELAY)

    async def subscribe_core(self, subject_filter: str, on_delivery: OnDelivery) -> CoreSubscription:
        """Deliver what other replicas and NATS clients publish on ``subject_filter`` from now (no replay)."""
        sub = CoreSubscription(subject_filter, on_delivery)
        sub.trace_headers = self._trace_headers
        await sub.start(self.nc)
        return sub


class Outlet:
    """Publishing to one subject with one header set (``Bus.outlet``); ``Bus.publish`` is this, awaited.

    The ``HPUB`` command's subject and each payload kind's header block are
    encoded once, not per message; the checks and the buffer are the bus's.
    """

    __slots__ = ("_batched", "_blocks", "_bus", "_head", "_headers", "subject")

    def __init__(self, bus: Bus, subject: str, headers: dict[str, str] | None, batched: bool = False) -> None:
        self._bus = bus
        self._batched = batched
        self.subject = subject
        self._headers = dict(headers) if headers else None
        self._head = f"HPUB {subject} ".encode()
        self._blocks: dict[str | None, bytes] = {}  # payload kind (None: not classified) -> header block

    def _block(self, kind: str | None) -> bytes:
        """The header block of a payload of ``kind`` the first time (``publish_then`` looks up the others)."""
        block = self._blocks[kind] = self._bus._frames.header_block(kind, self._headers)
        return block

    def publish_then(self, payload: Payload, then: Pending | None, msg_id: str | None = None) -> bool:
        """Send one message without a coroutine: ``then(ack, None)`` once JetStream stored it, or
        ``then(None, error)`` when it was not stored (the bus dropped, no acknowledgement within the
        publish timeout). ``then`` may be a future instead, resolved the same way. With ``then=None``
        JetStream is not asked for an acknowledgement at all (MQTT QoS 0).

        Raises ``Unavailable`` or ``PayloadTooLarge`` having sent nothing. Returns
        whether the outgoing buffer needs a ``Bus.drain()`` now. ``then`` is called
        from the bus's reader, synchronously: one call per message, nothing scheduled.
        A message id (``Nats-Msg-Id``) makes the header block this message's own.
        """
        bus = self._bus
        nc = bus._nc  # checked here, not by a helper: this runs for every message
        if nc is None or not nc.is_connected:
            raise Unavailable("message bus unavailable; retry shortly")
        body = payload.body
        limit = max_payload(nc)
        if len(body) > bus._max_bytes or len(body) > limit:
            raise PayloadTooLarge(f"message is larger than {min(bus._max_bytes, limit)} bytes")
        kind = payload.known_kind
        if msg_id is None:
            block = self._blocks.get(kind) or self._block(kind)
        else:
            block = bus._frames.header_block(kind, self._headers, msg_id)
        batches = bus._batches
        if then is None:
            size = len(block)
            command = b"%b%d %d\r\n%b%b\r\n" % (self._head, size, size + len(body), block, body)
        elif self._batched and msg_id is None and batches.enabled and not isinstance(then, asyncio.Future):
            return batches.add(self._head, block, body, then)
        else:
            token = bus._track(then)
            command = acked_command(self._head, b"%b%d" % (bus._inbox_prefix, token), block, body)
            bus._acks.frames[token] = command  # sent again if no stream takes it (``Bus._retry``)
        if batches.collecting:
            return batches.add_command(command)  # after the burst's earlier publishes, before its later ones
        return append(nc, command, len(body))
