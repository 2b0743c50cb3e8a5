"""One MQTT client connection: the asyncio driver of ``MqttSession`` (session.py), which decides what each packet does.

Transport-neutral: TCP (``server.py``) and WebSocket (``websocket.py``) feed it
bytes with ``data_received`` and give it a ``Wire`` to write to. Every packet
goes through the session's table once, in order; what it asks for (``actions.py``)
is carried out here, against the gateway's services. One reader task per
connection handles packets strictly in order; nothing spawns a task per packet.
Incoming packets queue in a short deque and reading from the socket is paused
when it fills (or while the client is rate limited). While that task waits idle
with nothing queued, ``data_received`` hands the packet to the session itself and
carries out whatever needs no waiting (a PUBACK, a QoS 0/1 PUBLISH the gateway
takes at once); the rest queues for the reader, which keeps the order.

Publishing is pipelined: a PUBLISH is sent to JetStream and the next packet is
read at once; acknowledgements (PUBACK, PUBREC) go out in order, each only after
JetStream stored its message. QoS 0 is fire-and-track: JetStream acknowledges
one QoS 0 publish in ``TRACK_EVERY``, which bounds how far a client runs ahead
and surfaces store failures (logged, counted as rejected). Deliveries are written to a buffer flushed once
per event-loop iteration; QoS 1/2 deliveries occupy an in-flight window and
wait in a bounded backlog beyond it; a client whose backlog overflows is a slow
consumer and is disconnected.

Billing (``gateway.billing``, reactions in ``errors.py``): CONNECT is refused
with CONNACK 5 when the quota and balance are spent or the plan's connections
are all open; a publish refused for the quota closes the connection (no
PUBACK, so the client re-sends after a top-up); a rate-limited publish pauses
reading for ``retry_after`` and is retried. Deliveries are billed, once per write batch.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, Protocol

import structlog

from auth.revocations import LiveHandle
from auth.tokens import Claims
from gateway.billing import ConnectionLease
from gateway.bus.mqtt_store import SessionRecord, StoredSubscription, session_names
from gateway.bus.session_consumer import SessionConsumer, SessionMessage
from gateway.errors import FlowGateError, Forbidden, InvalidName, NotFound, Unauthorized
from gateway.events import Session
from gateway.payload import Delivery, Payload
from gateway.publishing import AdmitLater, Outlet
from gateway.topics import Namespace, topic_matches
from protocols.mqtt.actions import (
    Action,
    AddSubscriptions,
    Authenticate,
    Close,
    Complete,
    Reauthenticate,
    Release,
    RemoveSubscriptions,
    SaveSession,
    Send,
    SendAfterAcks,
    SetTimer,
    Store,
    StoreFailed,
)
from protocols.mqtt.codec import MQTTProtocolError, encode, encode_publish
from protocols.mqtt.codec5 import ServerDecoder, encode5
from protocols.mqtt.context import MqttContext
from protocols.mqtt.errors import PublishReaction, connack_code, publish_reaction, reject_reason, retry_after
from protocols.mqtt.flow import OutboundWindow, PendingAck, delivery_qos, packet_id_for_seq
from protocols.mqtt.packets import (
    CONNACK_NOT_AUTHORIZED,
    SUBACK_FAILURE,
    Connect,
    Packet,
    Publish,
    SubAck,
    UnsubAck,
)
from protocols.mqtt.properties import NO_PROPERTIES, ReasonCode
from protocols.mqtt.session import MqttSession, Result, publish_ack
from protocols.mqtt.shared import SHARE_PREFIX, SharedSubscriptions, parse_shared
from protocols.mqtt.subscriptions import HubSink, Outgoing, Subscription, best_match
from protocols.mqtt.v5 import TOPIC_ALIAS_MAXIMUM, V5Session, expired
from protocols.mqtt.v5_connection import V5Hooks

log = logging.getLogger("flowgate.mqtt")

INBOX_HIGH = 256  # packets parsed but not yet handled: pause reading above this
INBOX_LOW = 32
MAX_PENDING_ACKS = 2048  # publishes sent to JetStream and not yet acknowledged, per connection
MAX_SUBSCRIPTIONS = 256  # per connection; more get SUBACK 0x80
OUTLET_CACHE = 256  # topic names whose outlets a connection keeps, per QoS
YIELD_EVERY = 256  # packets handled in a row before the reader lets other tasks run
CORE_TIER_MAX_QOS = 1  # clean-session subscriptions up to this QoS use the hub's core tier, QoS 2 the stored one


class Wire(Protocol):
    """What a connection needs from its transport."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Malformed(Action):
    """The decoder rejected the bytes: handled in order, after the packets that came before it [MQTT-4.8.0-1]."""

    reason: str
    code: int


class _Closing(Exception):
    """Internal: stop handling packets; the reason is already recorded."""


def _render_qos0(full: bool) -> Callable[[Delivery], bytes]:
    def render(delivery: Delivery) -> bytes:
        topic = delivery.namespace.full(delivery.topic) if full else delivery.topic
        return encode_publish(topic, delivery.payload.body)

    return render


_RENDER_SHORT = _render_qos0(False)
_RENDER_FULL = _render_qos0(True)
_FRAME_SHORT, _FRAME_FULL = "mqtt0", "mqtt0f"  # Delivery.frame names: a QoS 0 PUBLISH, short or full topic name


class MqttConnection:
    def __init__(self, ctx: MqttContext, wire: Wire, peer: str, *, transport_name: str = "tcp") -> None:
        self.ctx = ctx
        self.wire = wire
        self.peer = peer
        self.transport_name = transport_name
        self.id = secrets.token_hex(8)
        self._loop = asyncio.get_running_loop()
        self._decoder = ServerDecoder(ctx.config.max_packet_size, topic_alias_maximum=TOPIC_ALIAS_MAXIMUM)
        self.session = MqttSession(
            window=ctx.config.window, max_packet_size=ctx.config.max_packet_size, ack_ready=self._drain_acks
        )
        self.v5: V5Session | None = None  # the session's, once an MQTT 5 CONNECT set it; rules in v5.py
        self._v5 = V5Hooks(self)
        self._shared = SharedSubscriptions(self)
        self._disconnect_code: int | None = None  # MQTT 5: the DISCONNECT sent before the server closes
        self._token_timer: asyncio.TimerHandle | None = None
        self._inbox: deque[Packet | Action] = deque()  # packets for the session, or actions waiting for the reader
        self._idle = False  # the reader task waits for packets: data_received may hand them to the session itself
        self._wake = asyncio.Event()
        self._reading_paused = False
        self._throttled = False
        self._peer_gone = False
        self._close_reason: str | None = None
        self._publish_will = True
        self._last_rx = self._loop.time()
        self._timers: list[asyncio.TimerHandle] = []
        # the session's actions: carried out at once (False: it needs the reader), or by the reader
        self._now: dict[type[Action], Callable[[Any], bool]] = {
            Send: self._do_send,
            SendAfterAcks: self._do_send_after_acks,
            Complete: self._do_complete,
            Store: self._store_now,
            SaveSession: self._do_save,
            SetTimer: self._do_set_timer,
            StoreFailed: self._do_store_failed,
        }
        self._later: dict[type[Action], Callable[[Any], Awaitable[None]]] = {
            Store: self._store,
            Authenticate: self._on_connect,
            Reauthenticate: self._v5.on_auth,
            Release: self._on_release,
            AddSubscriptions: self._on_subscribe,
            RemoveSubscriptions: self._on_unsubscribe,
            Close: self._do_close,
            _Malformed: self._do_malformed,
        }
        # outbound
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self._write_paused = False
        self._window: OutboundWindow[Outgoing] = self.session.window
        self._backlog: deque[Outgoing] = deque()
        self._acks = self.session.acks  # publishes awaiting the store, in order, with their PUBACK/PUBREC
        self._acks_drained = asyncio.Event()
        self._overfull = False  # the bus's outgoing buffer wants a drain before more is sent
        # QoS 0 and QoS 1: topic names published to -> their outlets (publishing.Outlet)
        self._outlets: tuple[dict[str, Outlet], dict[str, Outlet]] = ({}, {})
        # session
        self.claims: Claims | None = None
        self.client_id = ""
        self.session_key: str | None = None
        self._consumer_name = ""
        self._subs: dict[str, Subscription] = {}
        self._bus_bound = False  # a QoS 1 subscription on the hub's core tier: close when the bus drops
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None
        self._delivered_count = 0
        self._billing_namespace: Namespace | None = None  # deliveries are billed once per write batch (_flush):
        self._unbilled = 0  # this many for that namespace so far
        self._consumer: SessionConsumer | None = None
        self._counted = False
        self._lease: ConnectionLease | None = None  # counted against the plan's connections (billing guard)
        self._live: LiveHandle | None = None  # ended when the user is disabled or deleted, the token revoked
        self.events: Session | None = None  # connection events and presence (gateway.events)
        self.closed = asyncio.Event()
        ctx.connections.add(self)
        self._delivered = ctx.services.metrics.delivered.labels("mqtt")
        self._guard = ctx.services.guard
        self._task = self._loop.create_task(self._run(), name=f"mqtt-{self.id}")

    # -- transport callbacks (synchronous) -----------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._close_reason is not None or self._peer_gone:
            return
        self._last_rx = self._loop.time()
        decoder = self._decoder
        decoder.feed(data)
        inbox = self._inbox
        receive = self.session.receive
        try:
            while (packet := decoder.next_packet()) is not None:
                # Handed to the session here only while the reader waits idle with nothing queued, so packets
                # are still handled one at a time and in order [MQTT-4.6.0-2].
                if (
                    inbox
                    or not self._idle
                    or self._close_reason is not None
                    or self._throttled
                    or self._overfull
                    or len(self._acks) >= MAX_PENDING_ACKS
                ):
                    inbox.append(packet)
                else:
                    self._apply_now(receive(packet))
        except MQTTProtocolError as exc:
            inbox.append(_Malformed(exc.reason, exc.reason_code))
        if inbox:
            self._wake.set()
            if len(inbox) >= INBOX_HIGH and not self._reading_paused:
                self._reading_paused = True
                self.wire.pause_reading()

    def connection_lost(self) -> None:
        """The peer closed or the network failed: finish the packets already received, then clean up."""
        self._peer_gone = True
        self._wake.set()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump_backlog()

    def bus_interrupted(self) -> None:
        """The bus connection dropped: messages for the hub's core tier may have been lost meanwhile.

        A connection that has had a QoS 1 subscription on that tier is closed:
        its clean session ends, and the client reconnects and subscribes again,
        rather than miss a message at QoS 1 without knowing (hub.py).
        """
        if self._bus_bound:
            self.abort(
                "message bus connection lost: QoS 1 deliveries may have been missed; reconnect",
                will=True,
                code=ReasonCode.SERVER_BUSY,
            )

    def abort(self, reason: str, *, will: bool = True, code: int = ReasonCode.UNSPECIFIED_ERROR) -> None:
        """Close from the server side (keepalive, takeover, expiry, overflow, shutdown); ``code``: MQTT 5's DISCONNECT."""
        if self._close_reason is not None:
            return
        self._close_reason = reason
        self._disconnect_code = code
        self._publish_will = will
        self._inbox.clear()
        self._wake.set()

    # -- carrying out the session's actions ------------------------------------------------------

    def _apply_now(self, result: Result) -> None:
        """Carry out what needs no waiting; the rest queues for the reader, in order."""
        if result is None:
            return
        if isinstance(result, list):
            for index, action in enumerate(result):
                run = self._now.get(type(action))
                if run is None or not run(action):
                    self._inbox.extend(result[index:])
                    return
            return
        run = self._now.get(type(result))
        if run is None or not run(result):
            self._inbox.append(result)

    async def _apply(self, result: Result) -> None:
        """The reader's way: each action at once if it can be, else awaited."""
        if result is None:
            return
        for action in result if isinstance(result, list) else (result,):
            run = self._now.get(type(action))
            if run is None or not run(action):
                await self._later[type(action)](action)

    def _apply_soon(self, result: Result) -> None:
        """From a callback (store answers, timers): as ``_apply_now``, but a close is an ``abort``."""
        if result is None:
            return
        for action in result if isinstance(result, list) else (result,):
            if isinstance(action, Close):
                code = ReasonCode.UNSPECIFIED_ERROR if action.code is None else action.code
                self.abort(action.reason, will=action.will, code=code)
            else:
                self._now[type(action)](action)

    def _do_send(self, action: Send) -> bool:
        self._write(action.data)
        return True

    def _do_send_after_acks(self, action: SendAfterAcks) -> bool:
        self._queue_ready(action.data)
        return True

    def _do_complete(self, action: Complete) -> bool:
        self._complete(action.item)
        return True

    def _do_save(self, action: SaveSession) -> bool:
        self._mark_dirty()
        return True

    def _do_set_timer(self, action: SetTimer) -> bool:
        self._timers.append(self._loop.call_at(action.deadline, self._check_keepalive))
        return True

    def _do_store_failed(self, action: StoreFailed) -> bool:
        self.ctx.services.metrics.rejected.labels("mqtt", "store_failed").inc()
        log.warning("mqtt %s: QoS 0 message not stored: %s", self.id, action.error)
        return True

    async def _do_close(self, action: Close) -> NoReturn:
        self._fail(action.reason, will=action.will, code=action.code)

    async def _do_malformed(self, action: _Malformed) -> NoReturn:
        await self._do_close(self.session.malformed(action.reason, action.code))

    # -- the reader task -------------------------------------------------------------------

    async def _run(self) -> None:
        # Bound to this task's context: every log line of the reader carries them.
        structlog.contextvars.bind_contextvars(conn=self.id, protocol="mqtt", peer=self.peer)
        self._timers.append(self._loop.call_later(self.ctx.config.connect_timeout, self._connect_timeout))
        try:
            await self._serve()
        except _Closing:
            pass
        except FlowGateError as exc:
            self._close_reason = self._close_reason or f"{exc.code}: {exc.message}"
        finally:
            await self._cleanup()

    def _connect_timeout(self) -> None:
        if self.claims is None:
            self.abort("no CONNECT in time", will=False)

    async def _serve(self) -> None:
        inbox = self._inbox
        receive = self.session.receive
        handled = 0
        while True:
            if self._close_reason is not None:
                return
            if not inbox:
                if self._peer_gone:
                    self._close_reason = "connection lost"
                    return
                self._wake.clear()
                self._idle = True  # data_received may hand packets to the session itself
                try:
                    await self._wake.wait()
                finally:
                    self._idle = False
                if self._overfull or len(self._acks) >= MAX_PENDING_ACKS:
                    await self._settle()  # after publishes data_received handled
                continue
            item = inbox.popleft()
            if self._reading_paused and len(inbox) <= INBOX_LOW and not self._throttled:
                self._reading_paused = False
                self.wire.resume_reading()
            await self._apply(item if isinstance(item, Action) else receive(item))
            if self._overfull or len(self._acks) >= MAX_PENDING_ACKS:
                await self._settle()
            handled += 1
            if handled % YIELD_EVERY == 0:
                # Let the bus flush what was sent and take in acknowledgements while a burst is handled,
                # so storing overlaps with reading instead of alternating with it.
                await asyncio.sleep(0)

    def _fail(self, reason: str, *, will: bool = True, code: int | None = ReasonCode.UNSPECIFIED_ERROR) -> NoReturn:
        if self._close_reason is None:
            self._disconnect_code = code
        self._close_reason = self._close_reason or reason
        self._publish_will = will
        raise _Closing

    # -- CONNECT -----------------------------------------------------------------------------

    async def _on_connect(self, action: Authenticate) -> None:
        """A CONNECT that passed the session's checks: its token, user, billing and session."""
        connect = action.connect
        session = self.session
        self.v5 = session.v5
        self._window = session.window  # MQTT 5: sized by the client's Receive Maximum
        services = self.ctx.services
        try:
            token = self._v5.token(connect) if self.v5 is not None else (connect.password or b"").decode("utf-8")
            claims = services.tokens.verify(token)
            user = await services.accounts.get_user(claims.user_id)
            if user.disabled:
                raise Forbidden("user is disabled")
            if connect.will is not None:
                services.publisher.resolve(claims, connect.will.topic)
            # Quota and balance spent, or all the plan's connections open: CONNACK 5 (PaymentRequired).
            self._lease = await services.guard.connect(claims, "mqtt")
        except UnicodeDecodeError:
            self._refuse(connack_code(Unauthorized()), "password is not UTF-8")
        except NotFound:
            self._refuse(CONNACK_NOT_AUTHORIZED, "user no longer exists")
        except InvalidName as exc:
            if self.v5 is not None:  # [3.2.2.2] 0x90 Topic Name invalid
                self._refuse(CONNACK_NOT_AUTHORIZED, f"invalid will topic: {exc.message}", exc)
            await self._do_close(session.close(f"protocol error: invalid will topic: {exc.message}", will=False))
        except FlowGateError as exc:
            self._refuse(connack_code(exc), f"CONNECT refused: {exc.message}", exc)
        namespace = claims.namespace
        # A zero-byte ClientId with CleanSession 1 gets a unique one [MQTT-3.1.3-6].
        self.client_id = connect.client_id or "auto-" + secrets.token_hex(8)
        self.session_key, self._consumer_name = session_names(namespace, self.client_id)
        store = self.ctx.store
        try:
            await self.ctx.take_over(self.session_key, self)
            present = False
            record: SessionRecord | None = None
            if connect.clean_session:
                # CleanSession 1 discards any previous session [MQTT-3.1.2-6] (MQTT 5: Clean Start [MQTT-3.1.2-4]).
                if await store.load_session(self.session_key) is not None or await store.consumer_exists(
                    self._consumer_name
                ):
                    await store.delete_session(self.session_key, self._consumer_name)
            if session.persistent:
                record = await store.load_session(self.session_key)
                present = record is not None and await store.consumer_exists(self._consumer_name)
                if record is None or not present:
                    record = SessionRecord(())
                    await store.save_session(self.session_key, record)
        except FlowGateError as exc:
            self._refuse(connack_code(exc), f"session unavailable: {exc.message}")
        self.claims = claims
        self._live = services.tokens.revocations.attach(claims, self._revoked)
        structlog.contextvars.bind_contextvars(user=claims.user_id, app=claims.app, client_id=self.client_id)
        services.metrics.connections.labels("mqtt").inc()
        self._counted = True
        await self._apply(session.accepted(present, None if connect.client_id else self.client_id, self._last_rx))
        log.info(
            "mqtt %s connected: user=%s app=%s client_id=%r clean=%s keepalive=%d via %s",
            self.id, claims.user_id, claims.app, self.client_id, connect.clean_session, connect.keepalive,
            self.transport_name,
        )  # fmt: skip
        self._token_timer = self._loop.call_later(max(0.0, claims.expires_at - time.time()), self._token_expired)
        if record is not None:
            for stored in record.subscriptions:
                self._subs[stored.topic_filter] = self._v5.restored(
                    Subscription(stored.topic_filter, stored.qos, stored.full, stored.since), stored
                )
            await self._apply(session.restore(record.inbound, record.pubrel))
            self._consumer = await store.open_consumer(
                self._consumer_name,
                namespace,
                self._on_session_message,
                window=self._window.size,
                expiry=self._v5.session_expiry(),
            )
        self.events = services.events.connected(namespace, "mqtt", client_id=self.client_id, filters=list(self._subs))

    def _refuse(self, code: int, reason: str, error: FlowGateError | None = None) -> NoReturn:
        send, close = self.session.refused(code, reason, error)
        self._write(send.data)
        self._fail(close.reason, will=close.will, code=close.code)

    def _revoked(self, exc: FlowGateError) -> None:
        # MQTT 3.1.1 has no reason code: the socket is closed; MQTT 5 first gets DISCONNECT 0x87 (disabled:
        # 0x98, an administrative action). The will is not sent and a persistent session is kept.
        code = ReasonCode.ADMINISTRATIVE_ACTION if exc.status == 403 else ReasonCode.NOT_AUTHORIZED
        self.abort(f"{exc.code}: {exc.message}", will=False, code=code)

    def _token_expired(self) -> None:
        self.abort("token expired", will=True, code=ReasonCode.MAXIMUM_CONNECT_TIME)

    def _check_keepalive(self) -> None:
        if self._close_reason is None:
            self._apply_soon(self.session.keepalive_due(self._loop.time(), self._last_rx))

    # -- PUBLISH from the client ---------------------------------------------------------------

    def _store_now(self, action: Store) -> bool:
        """A QoS 0/1 PUBLISH the gateway takes without waiting; False: the reader stores it (``_store``)."""
        packet = action.publish
        if packet.qos == 2 or packet.retain or packet.properties is not NO_PROPERTIES or action.refusal is not None:
            return False
        try:
            return self._publish_now(packet)
        except FlowGateError as exc:
            action.refusal = exc  # _store reacts (it may wait, so not here)
            return False

    async def _store(self, action: Store) -> None:
        refusal, action.refusal = action.refusal, None
        if refusal is None or not await self._refused(action.publish, refusal):  # False: try it again
            await self._on_publish(action.publish)

    def _publish_now(self, packet: Publish) -> bool:
        """The hot path of a QoS 0/1 PUBLISH: sent without awaiting anything, or False for ``_on_publish``.

        The outlet (topic permission checked, subject and headers encoded) of
        each name is kept per connection and QoS; the billing guard decides from
        memory or defers.
        """
        qos = packet.qos
        outlets = self._outlets[qos]
        outlet = outlets.get(packet.topic)
        if outlet is None:
            claims = self.claims
            assert claims is not None
            try:
                outlet = self.ctx.services.publisher.outlet(
                    claims, packet.topic, protocol="mqtt", headers=self._v5.headers(qos, None)
                )
            except FlowGateError:
                return False  # refused: _on_publish reports it
            if len(outlets) >= OUTLET_CACHE:
                outlets.clear()
            outlets[packet.topic] = outlet
        pending = self._pending(packet)
        raw = packet.raw
        # A QoS 0 PUBLISH is what a QoS 0 subscriber who spells the topic the same way gets: forwarded as is.
        frames = None if qos or raw is None else {_FRAME_SHORT if packet.topic == outlet.topic else _FRAME_FULL: raw}
        try:
            payload = Payload.raw(packet.payload) if self.v5 is None else self._v5.payload(packet, None)
            overfull = outlet.submit_now(payload, pending, protocol="mqtt", frames=frames)
        except AdmitLater:
            return False
        self._published(packet, pending)
        self._overfull = overfull
        return True

    async def _on_publish(self, packet: Publish) -> None:
        qos = packet.qos
        claims = self.claims
        assert claims is not None
        services = self.ctx.services
        meta = self._v5.meta(packet)
        payload = self._v5.payload(packet, meta)
        headers = self._v5.headers(qos, meta)
        while True:
            try:
                if packet.retain:
                    topic = services.publisher.resolve(claims, packet.topic)
                    await self.ctx.store.retain(claims.namespace, topic, payload, qos)
                pending = self._pending(packet)
                await services.publisher.submit(
                    claims,
                    packet.topic,
                    payload,
                    protocol="mqtt",
                    headers=headers,
                    acknowledged=pending is not None,
                    then=pending,
                )
            except FlowGateError as exc:
                if await self._refused(packet, exc):
                    return
                continue
            break
        self._published(packet, pending)
        await self._settle()

    async def _refused(self, packet: Publish, exc: FlowGateError) -> bool:
        """React to a publish the gateway refused: True when done with it, False to try it again."""
        if self.v5 is not None and self._v5.refused_publish(packet, exc):
            return True
        reaction = publish_reaction(exc)
        if reaction is PublishReaction.RETRY_LATER:
            await self._throttle(retry_after(exc))
            return False
        if reaction is PublishReaction.DROP_AND_ACK:
            self.ctx.services.metrics.rejected.labels("mqtt", reject_reason(exc)).inc()
            log.warning("mqtt %s: publish to %r dropped: %s", self.id, packet.topic, exc.message)
            ack = publish_ack(packet.qos, packet.packet_id or 0)
            if ack is not None:
                self._queue_ready(ack)
            return True
        self._fail(f"publish to {packet.topic!r} failed: {exc.code}: {exc.message}")

    def _pending(self, packet: Publish) -> PendingAck | None:
        return self.session.pending(packet)

    def _published(self, packet: Publish, pending: PendingAck | None) -> None:
        """A PUBLISH went to JetStream (the session counts it; its acknowledgement follows the store's)."""
        result = self.session.published(packet, pending)
        if result is not None:
            self._apply_soon(result)
        if pending is not None and pending.settled:
            self._drain_acks()

    async def _settle(self) -> None:
        """Wait while the bus's outgoing buffer is overfull or too many publishes await their acknowledgement."""
        if self._overfull:
            self._overfull = False
            await self.ctx.services.bus.drain()
        if len(self._acks) >= MAX_PENDING_ACKS:
            self._acks_drained.clear()
            await self._acks_drained.wait()

    async def _throttle(self, seconds: float) -> None:
        """Stop reading from this client for ``seconds`` (rate limited), then go on."""
        self._throttled = True
        if not self._reading_paused:
            self._reading_paused = True
            self.wire.pause_reading()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._throttled = False
        if self._close_reason is not None:
            raise _Closing
        if self._reading_paused and len(self._inbox) <= INBOX_LOW:
            # _serve resumes only when it takes a packet: with the inbox empty it would wait forever
            self._reading_paused = False
            self.wire.resume_reading()

    def _queue_ready(self, packet: bytes) -> None:
        """Send an acknowledgement that waits for no store, after every earlier one [MQTT-4.6.0-2]."""
        if self.session.after_acks(packet):
            self._write(packet)

    def _drain_acks(self) -> None:
        """The store answered a publish: the acknowledgements now due go out, in order."""
        acks = self._acks
        if not acks:
            return
        wbuf = self._wbuf
        waiting = len(wbuf)
        result = self.session.drain_acks(wbuf)
        if len(wbuf) != waiting and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if result is not None:
            self._apply_soon(result)
        if len(acks) < MAX_PENDING_ACKS // 2:
            self._acks_drained.set()

    # -- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------

    async def _on_subscribe(self, action: AddSubscriptions) -> None:
        packet = action.subscribe
        claims = self.claims
        assert claims is not None
        namespace = claims.namespace
        rule = claims.permissions.subscribe
        codes: list[int] = []
        added: list[Subscription] = []
        retained_for: list[Subscription] = []
        for index, (name, requested) in enumerate(packet.topics):
            if name.startswith(SHARE_PREFIX):  # one member of a group gets each message (shared.py)
                if packet.options and packet.options[index] & 0x04:
                    self._fail("protocol error: No Local on a shared subscription [MQTT-3.8.3-4]", code=0x82)
                try:
                    group, _ = parse_shared(name) or ("", "")
                    ids = packet.properties.subscription_identifiers
                    codes.append(await self._shared.subscribe(name, group, requested, ids))
                except FlowGateError as exc:
                    log.info("mqtt %s: shared subscription %r refused: %s", self.id, name, exc.message)
                    codes.append(SUBACK_FAILURE if self.v5 is None else self._v5.suback_reason(exc))
                continue
            try:
                topic_filter = namespace.filter(name)
                if not rule.permits_filter(topic_filter):
                    raise Forbidden(f"may not subscribe to {topic_filter!r}")
                if topic_filter not in self._subs and len(self._subs) >= MAX_SUBSCRIPTIONS:
                    raise Forbidden(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
                full = name.startswith(namespace.prefix) and len(name) > len(namespace.prefix)
                granted = min(requested, 2)
                existed = topic_filter in self._subs
                sub = await self._add_subscription(topic_filter, granted, full)
            except FlowGateError as exc:
                # Refused filters get 0x80, the others are granted [MQTT-3.9.3-1, 3.8.4-5].
                log.info("mqtt %s: subscription to %r refused: %s", self.id, name, exc.message)
                if self.events is not None and exc.status == 403:
                    self.events.auth_failure(exc.message)
                codes.append(SUBACK_FAILURE if self.v5 is None else self._v5.suback_reason(exc))
                continue
            codes.append(granted)
            added.append(sub)
            if self.v5 is None or self._v5.subscribed(sub, packet, index, existed):
                retained_for.append(sub)
        if self.events is not None:
            self.events.subscribed([sub.topic_filter for sub in added])
        if self.session.persistent and added:
            await self._save_session()
        self._send(SubAck(packet.packet_id, tuple(codes)))  # [MQTT-3.8.4-1, 3.8.4-2]
        for sub in retained_for:
            await self._send_retained(sub)

    async def _add_subscription(self, topic_filter: str, qos: int, full: bool) -> Subscription:
        """Add or replace a subscription; a replaced one keeps flowing without a gap [MQTT-3.8.4-3]."""
        assert self.claims is not None
        existing = self._subs.get(topic_filter)
        if self.session.persistent:
            since = existing.since if existing is not None else await self.ctx.store.last_seq()
            sub = Subscription(topic_filter, qos, full, since)
            self._subs[topic_filter] = sub
            self._want_more()
            return sub
        core = qos <= CORE_TIER_MAX_QOS
        if qos and core:
            self._bus_bound = True  # before any delivery on the core tier at QoS 1 (bus_interrupted)
        if existing is not None:
            old_qos, existing.qos, existing.full = existing.qos, qos, full
            if core != existing.core:
                # Onto the other hub tier: the new sinks first, so the flow is not interrupted [MQTT-3.8.4-3]
                # (a message may come twice while both are on).
                old_sinks, old_tier = existing.sinks, existing.core
                existing.sinks = []
                try:
                    await self._attach(existing, core=core)
                except FlowGateError:
                    existing.sinks, existing.core, existing.qos = old_sinks, old_tier, old_qos
                    raise
                await self._detach(old_sinks, core=old_tier)
            return existing
        sub = Subscription(topic_filter, qos, full)
        await self._attach(sub, core=core)
        self._subs[topic_filter] = sub
        return sub

    async def _attach(self, sub: Subscription, *, core: bool) -> None:
        """Give a clean session's subscription its hub sinks, on the core tier for QoS 0 and 1 (hub.py)."""
        assert self.claims is not None
        sink = HubSink(self, sub, self.claims.permissions.subscribe)
        hub = self.ctx.services.hub
        sub.core = core
        try:
            for subject in self.claims.namespace.filter_subjects(sub.topic_filter):
                await hub.add(subject, sink, core=core)
                sub.sinks.append((subject, sink))
        except FlowGateError:
            await self._remove_sinks(sub)
            raise

    async def _remove_sinks(self, sub: Subscription) -> None:
        sinks, sub.sinks = sub.sinks, []
        await self._detach(sinks, core=sub.core)

    async def _detach(self, sinks: list[tuple[str, HubSink]], *, core: bool) -> None:
        for subject, sink in sinks:
            await self.ctx.services.hub.remove(subject, sink, core=core)

    async def _send_retained(self, sub: Subscription) -> None:
        """Retained messages matching a new subscription, flagged RETAIN [MQTT-3.3.1-6, 3.3.1-8]."""
        claims = self.claims
        assert claims is not None
        try:
            retained = await self.ctx.store.retained(claims.namespace, sub.topic_filter)
        except FlowGateError as exc:
            log.warning("mqtt %s: retained messages for %r unavailable: %s", self.id, sub.topic_filter, exc.message)
            return
        rule = claims.permissions.subscribe
        for message in retained:
            if not topic_matches(sub.topic_filter, message.topic) or rule.hides(message.topic):
                continue  # e.g. '$' topics for wildcard filters [MQTT-4.7.2-1]
            if expired(message.payload.meta, time.time()):
                continue  # [MQTT-3.3.2-5]
            topic = claims.namespace.full(message.topic) if sub.full else message.topic
            qos = delivery_qos(message.qos, sub.qos)
            meta = message.payload.meta
            self._queue_out(Outgoing(topic, message.payload.body, qos, True, meta=meta, sub_ids=sub.ids))
            self._delivered_count += 1

    async def _on_unsubscribe(self, action: RemoveSubscriptions) -> None:
        packet = action.unsubscribe
        claims = self.claims
        assert claims is not None
        changed = False
        codes: list[int] = []  # MQTT 5 [3.11.3]
        for name in packet.topics:
            if name.startswith(SHARE_PREFIX):
                left = await self._shared.unsubscribe(name)
                codes.append(ReasonCode.SUCCESS if left else ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            try:
                topic_filter = claims.namespace.filter(name)
            except FlowGateError:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            sub = self._subs.pop(topic_filter, None)
            codes.append(ReasonCode.SUCCESS if sub is not None else ReasonCode.NO_SUBSCRIPTION_EXISTED)
            if sub is not None:
                changed = True
                await self._remove_sinks(sub)
                if self.events is not None:
                    self.events.unsubscribed([topic_filter])
        if changed and self.session.persistent:
            await self._save_session()
        # Even when nothing matched [MQTT-3.10.4-4, 3.10.4-5]; MQTT 5: one reason code per filter [MQTT-3.11.3-1].
        self._send(UnsubAck(packet.packet_id, tuple(codes) if self.v5 is not None else ()))

    async def _save_session(self) -> None:
        assert self.session_key is not None
        self._dirty = False
        record = SessionRecord(
            tuple(
                StoredSubscription(s.topic_filter, s.qos, s.since, s.full, *self._v5.stored_options(s))
                for s in self._subs.values()
            ),
            tuple(sorted(self.session.pubrel)),
            self.session.inbound.snapshot(),
        )
        await self.ctx.store.save_session(self.session_key, record)

    def _mark_dirty(self) -> None:
        """Session state changed in a way worth saving soon (coalesced, one write at a time)."""
        if not self.session.persistent:
            return
        self._dirty = True
        if self._saver is None or self._saver.done():
            self._saver = self._loop.create_task(self._save_soon())

    async def _save_soon(self) -> None:
        while self._dirty and self.claims is not None:
            try:
                await self._save_session()
            except FlowGateError as exc:
                log.warning("mqtt %s: session state not saved: %s", self.id, exc.message)
                return

    async def _on_release(self, action: Release) -> None:
        """A persistent session's QoS 2 message reached the client: save the PUBREL state, then release the message.

        The identifier is saved before the message is acknowledged in JetStream,
        so a crash in between re-sends the PUBLISH (same id, DUP) rather than
        losing the PUBREL.
        """
        item = action.item
        if self._consumer is None or item.ack_subject is None:
            return
        try:
            await self._save_session()
        except FlowGateError as exc:
            log.warning("mqtt %s: PUBREL state not saved: %s", self.id, exc.message)
            return  # the message stays unacknowledged: redelivered as PUBLISH after a reconnect
        self._consumer.ack(item.ack_subject)
        item.ack_subject = None

    # -- deliveries to the client ----------------------------------------------------------------

    def deliver_live(self, subscription: Subscription, delivery: Delivery) -> None:
        """A message from the hub for one of this (clean) session's subscriptions."""
        if self._close_reason is not None:
            return
        qos = delivery.qos if delivery.qos < subscription.qos else subscription.qos
        if self.v5 is not None:
            if not self._v5.deliver(subscription, delivery, qos):
                return  # No Local, or too large for the client: not delivered, not billed
        elif qos == 0 and not self._write_paused and not self._backlog:
            frame = delivery.frame(
                _FRAME_FULL if subscription.full else _FRAME_SHORT, _RENDER_FULL if subscription.full else _RENDER_SHORT
            )
            self._write(frame)
        else:
            topic = delivery.namespace.full(delivery.topic) if subscription.full else delivery.topic
            item = Outgoing(topic, delivery.payload.body, qos)
            packet_id = self._window.put(qos, item) if not self._backlog and not self._write_paused else None
            if packet_id is None:
                self._queue_out(item)
            else:  # _send_out's path, inlined for the common case of a window with room
                self._write(encode_publish(topic, item.body, qos, False, False, packet_id))
        self._delivered_count += 1
        if delivery.namespace is self._billing_namespace:
            self._unbilled += 1
        else:
            self._bill(delivery.namespace)

    def _on_session_message(self, message: SessionMessage) -> None:
        """A message from this persistent session's consumer."""
        consumer = self._consumer
        if consumer is None or self._close_reason is not None:
            return  # not acknowledged: redelivered to the next connection
        claims = self.claims
        assert claims is not None
        delivery = message.delivery
        sub = best_match(self._subs.values(), delivery, claims.permissions.subscribe)
        if sub is None or expired(delivery.payload.meta, time.time()):  # [MQTT-3.3.2-5], for 3.1.1 clients too
            consumer.ack(message.ack_subject)
            self._want_more()
            return
        if self.v5 is not None and not self._v5.wanted(sub, delivery):
            consumer.ack(message.ack_subject)
            self._want_more()
            return
        qos = delivery_qos(delivery.qos, sub.qos)
        topic = delivery.namespace.full(delivery.topic) if sub.full else delivery.topic
        if self.v5 is not None:
            item = self._v5.outgoing(sub, delivery, qos)
            item.sub_ids = self._v5.matching_ids(self._subs.values(), delivery)  # one copy: every id [MQTT-3.3.4-4]
            item.ack_subject = message.ack_subject
            if qos:
                item.dup = message.redelivered
                item.packet_id = packet_id_for_seq(delivery.seq)
            self._queue_out(item)
        elif qos == 0:
            self._queue_out(Outgoing(topic, delivery.payload.body, 0, ack_subject=message.ack_subject))
        else:
            item = Outgoing(
                topic,
                delivery.payload.body,
                qos,
                dup=message.redelivered,  # [MQTT-3.3.1-1]: a re-sent PUBLISH has DUP 1
                packet_id=packet_id_for_seq(delivery.seq),
                ack_subject=message.ack_subject,
            )
            self._queue_out(item)
        self._delivered_count += 1
        if delivery.namespace is self._billing_namespace:
            self._unbilled += 1
        else:
            self._bill(delivery.namespace)
        self._want_more()

    def _want_more(self) -> None:
        if self._consumer is not None:
            self._consumer.want(self._window.free - len(self._backlog))
        if self._shared.members:
            self._shared.want(self._window.free - len(self._backlog))

    def _queue_out(self, item: Outgoing) -> None:
        if self._backlog or self._write_paused or not self._fits(item):
            if len(self._backlog) >= self.ctx.config.outbound_limit:
                self.ctx.services.metrics.slow_consumers.labels("mqtt").inc()
                self.abort(
                    f"slow consumer: {len(self._backlog)} messages waiting", will=True, code=ReasonCode.QUOTA_EXCEEDED
                )
                return
            self._backlog.append(item)
            return
        self._send_out(item)

    def _fits(self, item: Outgoing) -> bool:
        if item.qos == 0:
            return True
        if item.packet_id is not None:
            return self._window.can_use(item.packet_id)
        return self._window.free > 0

    def _send_out(self, item: Outgoing) -> None:
        if self.v5 is not None:
            self._v5.send_out(item)
            return
        if item.qos == 0:
            self._write(encode_publish(item.topic, item.body, 0, item.retain))
            consumer = item.consumer or self._consumer
            if item.ack_subject is not None and consumer is not None:
                consumer.ack(item.ack_subject)
            return
        packet_id = item.packet_id if item.packet_id is not None else self._window.allocate()
        assert packet_id is not None
        self._window.add(packet_id, item.qos, item)
        self._write(encode_publish(item.topic, item.body, item.qos, item.retain, item.dup, packet_id))

    def _pump_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._write_paused and self._close_reason is None:
            if not self._fits(backlog[0]):
                break
            self._send_out(backlog.popleft())
        self._want_more()

    def _complete(self, item: Outgoing | None) -> None:
        """The client completed a QoS 1/2 delivery (PUBACK or PUBCOMP)."""
        if item is None:
            return  # an acknowledgement for nothing in flight is ignored
        consumer = item.consumer or self._consumer
        if item.ack_subject is not None and consumer is not None:
            consumer.ack(item.ack_subject)
        self._pump_backlog()

    def _bill(self, namespace: Namespace | None) -> None:
        """Bill the deliveries counted so far, then count for ``namespace`` (one bill per batch, not per message)."""
        if self._unbilled and self._billing_namespace is not None:
            self._guard.record_delivery(self._billing_namespace, self._unbilled)
        self._billing_namespace = namespace
        self._unbilled = 0 if namespace is None else 1

    # -- writing ---------------------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        self._write(encode(packet) if self.v5 is None else encode5(packet))

    def _write(self, data: bytes) -> None:
        self._wbuf.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._delivered_count:
            self._delivered.inc(self._delivered_count)  # one metrics update per batch, not per message
            self._delivered_count = 0
        if self._unbilled:
            self._bill(None)
        if not self._wbuf:
            return
        data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
        self._wbuf.clear()
        if not self._peer_gone:
            self.wire.write(data)

    # -- the end -----------------------------------------------------------------------------------

    async def _cleanup(self) -> None:
        self.session.close("closed")
        self._bill(None)  # deliveries not yet billed (still in the backlog)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        reason = self._close_reason = self._close_reason or "closed"  # from now on nothing is delivered
        if self._counted:
            self.ctx.services.metrics.connections.labels("mqtt").dec()
        if self._lease is not None:
            self._lease.close()
        if self._live is not None:
            self._live.detach()
        if self.events is not None:
            self.events.closed(reason)
        for sub in list(self._subs.values()):
            await self._remove_sinks(sub)
        if self._saver is not None and not self._saver.done():
            await self._saver
        if self._dirty and self.claims is not None:
            try:
                await self._save_session()
            except FlowGateError as exc:
                log.warning("mqtt %s: session state not saved: %s", self.id, exc.message)
        if self._shared.members:
            await self._shared.close()  # what the client did not acknowledge goes to another member
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()  # unacknowledged messages stay with the durable consumer
        if self._token_timer is not None:
            self._token_timer.cancel()
        if self.v5 is not None:
            await self._v5.closing(reason)  # DISCONNECT with a reason code; a session that ends with it
        self.ctx.release(self)
        self._flush()
        self.wire.close()
        claims = self.claims
        level = logging.WARNING if reason.startswith(("protocol error", "slow consumer")) else logging.INFO
        if claims is not None:
            log.log(level, "mqtt %s closed: %s", self.id, reason)
        else:
            log.log(level, "mqtt %s (%s) closed before CONNECT completed: %s", self.id, self.peer, reason)
        will = self.session.will
        if claims is not None and self._publish_will and will is not None and will.will is not None:
            delay = self._v5.will_delay(will.will)
            if delay > 0 and self.session_key is not None:  # MQTT 5 Will Delay Interval [MQTT-3.1.3-9]
                self.ctx.delay_will(self.session_key, delay, partial(self._send_will, claims, will))
            else:
                await self._send_will(claims, will)
        self.ctx.connections.discard(self)
        self.closed.set()

    async def _send_will(self, claims: Claims, connect: Connect) -> None:
        """Publish the will: the connection ended without DISCONNECT [MQTT-3.1.2-8]."""
        will = connect.will
        assert will is not None
        services = self.ctx.services
        meta = self._v5.will_meta(will)
        payload = Payload(will.payload, None, meta)
        try:
            if will.retain:
                topic = services.publisher.resolve(claims, will.topic)
                await self.ctx.store.retain(claims.namespace, topic, payload, will.qos)
            await services.publisher.publish(
                claims, will.topic, payload, protocol="mqtt", headers=self._v5.headers(will.qos, meta)
            )
        except FlowGateError as exc:
            log.warning("mqtt %s: will message to %r not published: %s", self.id, will.topic, exc.message)
        else:
            log.info("mqtt %s: will message published to %r", self.id, will.topic)

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def cancel(self) -> None:
        self._task.cancel()
