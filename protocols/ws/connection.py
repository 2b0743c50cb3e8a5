"""One ``/ws`` connection (accepted by ``protocols.ws.endpoint``): its reader, writer, subscriptions and timers.

One ``Connection`` runs two tasks: a reader that carries out client frames in
order (publishes are checked and sent to JetStream in frame order, so a
connection's messages keep their order, and acknowledged as JetStream answers;
a ``ping`` is answered once every publish before it has its outcome), a
writer that drains the connection's bounded ``Outbox`` into text frames (a
whole batch per socket write through ``protocols.ws.transport`` when the server
offers it, else one ASGI send per frame); two timers watch the token's lifetime. Every subscription feeds the one
outbox through a ``FilteredSink`` tagged with the subscription; live ones share
the process's fan-out hub, ``since`` ones read their own ordered consumer
(``gateway.feeds``). Each message is rendered once for all connections
(``Delivery.frame``). When the outbox overflows the client is not reading: its
subscriptions are released at once and it is closed with 4008 (counted in
``flowgate_slow_consumers_closed{protocol="ws"}``); the close frame waits behind
what is already in the socket, and a peer that still reads nothing for
``CLOSE_TIMEOUT`` is cut off.

During a session a refused publish is an error frame (402 or 429 with
``retry_after``) and the connection stays open; deliveries are billed.

Revocation (``auth.revocations``): a connection whose user is deleted or whose
token or API key is revoked is closed with 4401, one whose user is disabled
with 4403, the reason saying why; a new one is accepted and closed the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from starlette.types import Receive, Send

from auth.tokens import Claims
from gateway.bus import PubAck
from gateway.errors import BadRequest, FlowGateError, Forbidden, NotFound
from gateway.events import Session
from gateway.feeds import Feed
from gateway.outbox import Outbox, SlowConsumer, tagged
from gateway.payload import Delivery
from gateway.sinks import FilteredSink, Interest
from protocols.services import Services
from protocols.ws.pending import PendingPublishes
from protocols.ws.protocol import (
    FRAME_NAME,
    Auth,
    CloseCode,
    Command,
    FrameId,
    Ping,
    Publish,
    Rejected,
    Subscribe,
    Unsubscribe,
    ack_frame,
    close_code,
    close_reason,
    error_frame,
    gap_frame,
    max_frame_bytes,
    parse_frame,
    pong_frame,
    render_message,
    token_expiring_frame,
)
from protocols.ws.transport import DirectWriter

log = logging.getLogger("flowgate.ws")

PROTOCOL = "ws"
MAX_SUBSCRIPTIONS = 256
COUNTED_BY_GUARD = ("rate_limited", "payment_required")  # the billing guard counts these refusals itself
BATCH = 128  # frames written per wake-up of the writer
CLOSE_TIMEOUT = 60.0  # how long a close frame may wait behind a client that does not read


class _Subscription:
    """One subscribe of a connection; the tag its deliveries carry through the outbox."""

    __slots__ = ("active", "feed", "filter", "sink")

    def __init__(self, topic_filter: str) -> None:
        self.filter = topic_filter
        self.active = True
        self.feed: Feed | None = None
        self.sink: FilteredSink | None = None


class Connection:
    def __init__(
        self,
        services: Services,
        claims: Claims,
        send: Send,
        direct: DirectWriter | None = None,
        events: Session | None = None,  # connection events and presence (gateway.events)
    ) -> None:
        self.services = services
        self.events = events
        self._end_reason = "client closed"
        self.claims = claims
        self._send = send
        self._direct = direct
        settings = services.settings
        self._max_frame = max_frame_bytes(settings.max_message_bytes)
        self.outbox: Outbox[tuple[object, Delivery]] = Outbox(settings.outbound_queue_size, self._overflowed)
        self.subscriptions: dict[str, _Subscription] = {}
        self._done: asyncio.Future[tuple[int, str] | None] = asyncio.get_running_loop().create_future()
        self._timers: list[asyncio.TimerHandle] = []
        self._notices: set[asyncio.Task[None]] = set()
        self._pending = PendingPublishes()  # sent to JetStream and not yet acknowledged
        self._closed = False
        # a disabled or deleted user, a revoked token or key: closed with 4401/4403 (auth.revocations)
        self._live = services.tokens.revocations.attach(claims, self._revoked)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        metrics = self.services.metrics
        metrics.connections.labels(PROTOCOL).inc()
        self._arm_token_timers()
        tasks = [asyncio.create_task(self._read(receive)), asyncio.create_task(self._write())]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            close = await self._done
        finally:
            self._closed = True
            self._live.detach()
            if self.events is not None:
                self.events.closed(self._end_reason)
            for handle in self._timers:
                handle.cancel()
            tasks += self._notices
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await self._release()
            metrics.connections.labels(PROTOCOL).dec()
        if close is not None:
            await self._close(*close)

    def finish(self, code: int | None = None, reason: str = "") -> None:
        """End the connection: with a close frame (``code``), or quietly when the client is gone."""
        if not self._done.done():
            self._end_reason = reason or self._end_reason
            self._done.set_result(None if code is None else (code, reason))

    def _revoked(self, exc: FlowGateError) -> None:
        self.finish(close_code(exc), exc.message)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, OSError):  # uvicorn's ClientDisconnected: the peer is gone
            self.finish()
            return
        log.error("websocket connection failed", exc_info=exc)
        self.finish(CloseCode.INTERNAL_ERROR, "internal error")

    def _overflowed(self) -> None:
        self.services.metrics.slow_consumers.labels(PROTOCOL).inc()
        log.warning("closing slow websocket consumer (outbound buffer of %d full)", self.outbox.maxsize)
        self.finish(CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")

    async def _release(self) -> None:
        self.outbox.close()
        subscriptions = list(self.subscriptions.values())
        self.subscriptions.clear()
        for subscription in subscriptions:
            await self._drop(subscription)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._send({"type": "websocket.close", "code": code, "reason": close_reason(reason)})
        except (TimeoutError, OSError):
            log.info("websocket closed without a closing handshake (%d)", code)
            if self._direct is not None:
                self._direct.abort()  # the peer stopped reading: free the socket now

    # -- the two tasks and the token timers ----------------------------------------------------

    async def _read(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.finish()
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            await self._handle(parse_frame(data, max_frame_bytes=self._max_frame))

    async def _write(self) -> None:
        """Drain the outbox in batches: one write per batch when the server offers it, else one send per frame."""
        outbox = self.outbox
        send, direct = self._send, self._direct
        delivered = self.services.metrics.delivered.labels(PROTOCOL)
        guard, namespace = self.services.guard, self.claims.namespace
        while True:
            try:
                item = await outbox.get()
            except SlowConsumer:
                return  # _overflowed already ends the connection
            if item is None:
                return
            frames = [
                delivery.frame(FRAME_NAME, render_message)
                for tag, delivery in (item, *outbox.drain(BATCH - 1))
                if tag.active  # type: ignore[attr-defined]  # else unsubscribed while queued
            ]
            if not frames:
                continue
            if direct is not None:
                await direct.drained()  # backpressure: a client that stops reading fills its outbox
                direct.write(frames)
            else:
                for frame in frames:
                    await send({"type": "websocket.send", "text": frame.decode()})
            guard.record_delivery(namespace, len(frames))  # billed per message handed to the client
            delivered.inc(len(frames))

    def _arm_token_timers(self) -> None:
        """Warn shortly before the token expires and close with 4401 when it does (re-armed by a refresh)."""
        for handle in self._timers:
            handle.cancel()
        loop = asyncio.get_running_loop()
        claims = self.claims
        notice = min(self.services.settings.token_expiry_notice_seconds, (claims.expires_at - claims.issued_at) / 2)
        expires_in = claims.expires_at - time.time()  # exp is wall-clock time; timers run on the loop's clock
        self._timers = [
            loop.call_later(max(0.0, expires_in - notice), self._warn_expiring, claims.expires_at),
            loop.call_later(max(0.0, expires_in), self.finish, CloseCode.UNAUTHORIZED, "token expired"),
        ]

    def _warn_expiring(self, expires_at: int) -> None:
        self._emit(token_expiring_frame(expires_at))

    def _emit(self, frame: bytes) -> None:
        """Send a control frame from a callback: written at once when possible, else by a short task."""
        if self._closed:
            return
        if self._direct is not None:
            self._direct.write([frame])
            return
        task = asyncio.create_task(self._send_frame(frame))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    # -- client frames ---------------------------------------------------------------------------

    async def _send_frame(self, frame: bytes) -> None:
        await self._send({"type": "websocket.send", "text": frame.decode()})

    async def _handle(self, command: Command | Rejected) -> None:
        if isinstance(command, Rejected):
            await self._send_frame(error_frame(command.error, command.id))
            return
        if self._done.done():
            return  # ending (e.g. revoked): nothing more is carried out
        if self.claims.expires_at <= time.time():
            self.finish(CloseCode.UNAUTHORIZED, "token expired")
            return
        try:
            if isinstance(command, Publish):
                await self._publish(command)
            elif isinstance(command, Subscribe):
                await self._subscribe(command)
            elif isinstance(command, Unsubscribe):
                await self._unsubscribe(command)
            elif isinstance(command, Ping):
                await self._pending.settled.wait()  # a pong follows the outcome of every publish sent before the ping
                await self._send_frame(pong_frame(command.id))
            else:
                await self._auth(command)
        except FlowGateError as exc:
            if isinstance(command, Publish) and exc.code not in COUNTED_BY_GUARD:
                self.services.metrics.rejected.labels(PROTOCOL, exc.code).inc()
            if self.events is not None and exc.status in (401, 403):
                self.events.auth_failure(exc.message)
            topic = getattr(command, "topic", None)
            await self._send_frame(error_frame(exc, command.id, **({"topic": topic} if topic else {})))

    async def _publish(self, command: Publish) -> None:
        """Pipelined: checked and sent in frame order, acknowledged by JetStream later (``_stored``).

        The reader goes on with the next frame at once, so one connection is not
        bound to one round trip per message; at most ``pending.MAX_IN_FLIGHT`` wait for
        their acknowledgement, and none is sent while the socket cannot take
        the answers (a client that publishes but does not read is paused).
        """
        await self._pending.room.wait()
        if self._direct is not None:
            await self._direct.drained()
        self._pending.sent()  # before sending: the acknowledgement may come while the bus drains
        try:
            await self.services.publisher.publish_then(
                self.claims,
                command.topic,
                command.payload,
                partial(self._stored, command.id, self.claims.namespace.short(command.topic)),
                protocol=PROTOCOL,
                idempotency_key=command.idempotency_key,
            )
        except FlowGateError:
            self._pending.answered()  # refused, nothing sent: ``_stored`` will not be called
            raise

    def _stored(self, frame_id: FrameId, topic: str, ack: PubAck | None, error: FlowGateError | None) -> None:
        self._pending.answered()
        if ack is not None:
            if frame_id is not None:
                extra = {"duplicate": True} if ack.duplicate else {}
                self._emit(ack_frame(frame_id, seq=ack.seq, topic=topic, **extra))
            return
        if error is None:
            error = FlowGateError("internal error")
        self.services.metrics.rejected.labels(PROTOCOL, error.code).inc()
        self._emit(error_frame(error, frame_id, topic=topic))

    async def _subscribe(self, command: Subscribe) -> None:
        namespace = self.claims.namespace
        topic_filter = namespace.filter(command.topic)
        rule = self.claims.permissions.subscribe
        if not rule.permits_filter(topic_filter):
            raise Forbidden(f"this token may not subscribe to {topic_filter!r}")
        existing = self.subscriptions.get(topic_filter)
        if existing is not None:
            if command.since is None:
                await self._ack(command.id, topic=topic_filter)
                return
            del self.subscriptions[topic_filter]  # subscribing again with since replays from there
            await self._drop(existing)
        elif len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise BadRequest(f"a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions")
        subject, exact = namespace.subscription_subject([topic_filter])
        subscription = _Subscription(topic_filter)
        subscription.sink = FilteredSink(
            Interest((topic_filter,)), rule, tagged(self.outbox, subscription), exact=exact
        )
        feed = Feed(self.services.hub, self.services.bus, subject, subscription.sink, command.since)
        gap = await feed.gap()
        if gap is not None:
            await self._send_frame(gap_frame(topic_filter, gap.requested_seq, gap.first_available_seq))
        subscription.feed = feed
        self.subscriptions[topic_filter] = subscription
        try:
            await feed.open()
        except BaseException:
            if self.subscriptions.get(topic_filter) is subscription:
                del self.subscriptions[topic_filter]
            raise
        if self.events is not None:
            self.events.subscribed([topic_filter])
        await self._ack(command.id, topic=topic_filter)

    async def _unsubscribe(self, command: Unsubscribe) -> None:
        topic_filter = self.claims.namespace.filter(command.topic)
        subscription = self.subscriptions.pop(topic_filter, None)
        if subscription is None:
            raise NotFound(f"not subscribed to {topic_filter!r}")
        await self._drop(subscription)
        if self.events is not None:
            self.events.unsubscribed([topic_filter])
        await self._ack(command.id, topic=topic_filter)

    async def _auth(self, command: Auth) -> None:
        claims = self.services.tokens.verify(command.token)
        if claims.namespace != self.claims.namespace:
            raise Forbidden("a refreshed token must be for the same user and app")
        previous, self.claims = self.claims, claims
        self._live.claims = claims
        rule = claims.permissions.subscribe
        if rule != previous.permissions.subscribe:
            for topic_filter, subscription in list(self.subscriptions.items()):
                if rule.permits_filter(topic_filter):
                    assert subscription.sink is not None
                    subscription.sink.restrict(rule)
                    continue
                del self.subscriptions[topic_filter]
                await self._drop(subscription)
                refused = Forbidden(f"the refreshed token may not subscribe to {topic_filter!r}")
                await self._send_frame(error_frame(refused, topic=topic_filter))
        self._arm_token_timers()
        await self._ack(command.id, expires_at=claims.expires_at)

    async def _ack(self, frame_id: FrameId, **fields: Any) -> None:
        if frame_id is not None:
            await self._send_frame(ack_frame(frame_id, **fields))

    @staticmethod
    async def _drop(subscription: _Subscription) -> None:
        subscription.active = False
        if subscription.feed is not None:
            await subscription.feed.close()
