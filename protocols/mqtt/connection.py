"""One MQTT client connection: ``MqttSession`` (session.py) decides, the connection carries out its actions.

Transport-neutral: TCP (``server.py``) and WebSocket (``websocket.py``) feed it
bytes with ``data_received`` and give it a ``Wire`` to write to. Every packet
goes through the session's table once, in order; what it asks for
(``actions.py``) is carried out by the layers this class is assembled from,
each in its own module: ``inbound.py`` (the reader, pause and resume),
``publishing.py`` (a client's PUBLISH to the store), ``subscribing.py``
(subscriptions and the stored session), ``outbound.py`` (deliveries, window,
backlog, write buffer, billing). This module sets up their shared state
(``host.py``), maps each action to the layer that carries it out, and owns the
connection's life: CONNECT against the gateway's services (token, user,
billing lease, session takeover), timers, and the end (cleanup, and the will
as ``MqttSession.ended`` decides).

Billing (``gateway.billing``, reactions in ``errors.py``): CONNECT is refused
with CONNACK 5 when the quota and balance are spent or the plan's connections
are all open.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, NoReturn

import structlog

from auth.revocations import LiveHandle
from auth.tokens import Claims
from gateway.billing import ConnectionLease
from gateway.bus.mqtt_store import SessionRecord, session_names
from gateway.bus.session_consumer import SessionConsumer
from gateway.errors import FlowGateError, Forbidden, InvalidName, NotFound, Unauthorized
from gateway.events import Session
from gateway.message_meta import MessageMeta
from gateway.payload import Payload
from gateway.publishing import Outlet
from gateway.topics import Namespace
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
from protocols.mqtt.close_causes import CloseCause, closing
from protocols.mqtt.codec5 import ServerDecoder
from protocols.mqtt.context import MqttContext
from protocols.mqtt.errors import connack_code
from protocols.mqtt.flow import OutboundWindow
from protocols.mqtt.host import Wire
from protocols.mqtt.inbound import Closing, Inbound, Malformed
from protocols.mqtt.outbound import Outbound
from protocols.mqtt.packets import (
    CONNACK_NOT_AUTHORIZED,
    Packet,
    Will,
)
from protocols.mqtt.publishing import Publishing
from protocols.mqtt.session import MqttSession
from protocols.mqtt.shared import SharedSubscriptions
from protocols.mqtt.subscribing import Subscribing
from protocols.mqtt.subscriptions import OneCopy, Outgoing, Subscription
from protocols.mqtt.v5 import TOPIC_ALIAS_MAXIMUM, V5Session
from protocols.mqtt.v5_connection import V5Hooks

__all__ = ["MqttConnection", "Wire"]

log = logging.getLogger("flowgate.mqtt")


class MqttConnection(Inbound, Publishing, Subscribing, Outbound):
    """One client connection (3.1.1 or 5) over any transport."""

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
        self._now: dict[type[Any], Callable[[Any], bool]] = {
            Send: self._do_send,
            SendAfterAcks: self._do_send_after_acks,
            Complete: self._complete,
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
            Malformed: self._do_malformed,
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
        self._bare_meta: MessageMeta | None = None  # what a PUBLISH without properties carries (V5Hooks.bare_meta)
        # session
        self.claims: Claims | None = None
        self.client_id = ""
        self.session_key: str | None = None
        self.resuming = False  # CONNECT asked to resume its session (no Clean Session / Clean Start)
        self._consumer_name = ""
        self._subs: dict[str, Subscription] = {}
        self._one: OneCopy | None = None  # some two filters overlap: one copy of a live delivery (Outbound._one_copy)
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

    def bus_interrupted(self) -> None:
        """The bus connection dropped: messages for the hub's core tier may have been lost meanwhile.

        A connection that has had a QoS 1 subscription on that tier is closed:
        its clean session ends, and the client reconnects and subscribes again,
        rather than miss a message at QoS 1 without knowing (hub.py).
        """
        if self._bus_bound:
            self.abort(
                CloseCause.BUS_LOST, "message bus connection lost: QoS 1 deliveries may have been missed; reconnect"
            )

    def _do_send(self, action: Send) -> bool:
        self._write(action.data)
        return True

    def _do_send_after_acks(self, action: SendAfterAcks) -> bool:
        self._queue_ready(action.data)
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
        self._stop(action)

    async def _do_malformed(self, action: Malformed) -> NoReturn:
        await self._do_close(self.session.malformed(action.reason, action.code))

    async def _run(self) -> None:
        # Bound to this task's context: every log line of the reader carries them.
        structlog.contextvars.bind_contextvars(conn=self.id, protocol="mqtt", peer=self.peer)
        self._timers.append(self._loop.call_later(self.ctx.config.connect_timeout, self._connect_timeout))
        try:
            await self._serve()
        except Closing:
            pass
        except FlowGateError as exc:
            self._abort(closing(CloseCause.GATEWAY_ERROR, f"{exc.code}: {exc.message}"))
        finally:
            await self._cleanup()

    def _connect_timeout(self) -> None:
        if self.claims is None:
            self.abort(CloseCause.CONNECT_TIMEOUT, "no CONNECT in time")

    async def _on_connect(self, action: Authenticate) -> None:
        """A CONNECT that passed the session's checks: its token, user, billing and session."""
        connect = action.connect
        session = self.session
        self.v5 = session.v5
        self._bare_meta = self._v5.bare_meta()
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
            await self._do_close(
                session.close(CloseCause.WILL_TOPIC_INVALID, f"protocol error: invalid will topic: {exc.message}")
            )
        except FlowGateError as exc:
            self._refuse(connack_code(exc), f"CONNECT refused: {exc.message}", exc)
        namespace = claims.namespace
        # A zero-byte ClientId with CleanSession 1 gets a unique one [MQTT-3.1.3-6].
        self.client_id = connect.client_id or "auto-" + secrets.token_hex(8)
        self.session_key, self._consumer_name = session_names(namespace, self.client_id)
        store = self.ctx.store
        self.resuming = not connect.clean_session
        try:
            await self.ctx.take_over(self.session_key, self)
            present = False
            record: SessionRecord | None = None
            consumer: SessionConsumer | None = None
            if connect.clean_session:
                # CleanSession 1 discards any previous session [MQTT-3.1.2-6] (MQTT 5: Clean Start [MQTT-3.1.2-4]).
                if await store.load_session(self.session_key) is not None or await store.consumer_exists(
                    self._consumer_name
                ):
                    await store.delete_session(self.session_key, self._consumer_name)
            if session.persistent:
                record = await store.load_session(self.session_key)
                if record is not None and record.expired(time.time()):  # its interval ran out [MQTT-3.1.2-23]
                    await store.delete_session(self.session_key, self._consumer_name)
                    record = None
                present = record is not None and await store.consumer_exists(self._consumer_name)
                if record is None or not present or record.expires_at is not None:
                    # a new session, or one held again: it does not expire while a connection holds it
                    record = SessionRecord(()) if record is None or not present else replace(record, expires_at=None)
                    await store.save_session(self.session_key, record)
                # The session exists from its CONNACK on [MQTT-3.2.2-2]: so does its consumer, for a connection
                # that resumes it at once (``present`` above); it delivers only after CONNACK (``start``).
                # A session that ends with its connection (expiry 0) is deleted at the close; its consumer
                # is still collected after the configured expiry if this process dies before that close.
                expiry = self._v5.session_expiry() or self.ctx.config.session_expiry
                consumer = await store.create_consumer(
                    self._consumer_name, namespace, self._on_session_message, expiry=expiry
                )
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
        if consumer is not None and self._close_reason is None:  # (taken over meanwhile: the next holder pulls)
            await consumer.start(self._window.size)
            self._consumer = consumer
        self.events = services.events.connected(namespace, "mqtt", client_id=self.client_id, filters=list(self._subs))

    def _refuse(self, code: int, reason: str, error: FlowGateError | None = None) -> NoReturn:
        send, close = self.session.refused(code, reason, error)
        self._write(send.data)
        self._stop(close)

    def _revoked(self, exc: FlowGateError) -> None:
        # MQTT 3.1.1 has no reason code: the socket is closed; MQTT 5 first gets DISCONNECT 0x87 (disabled:
        # 0x98, an administrative action). The will is not sent and a persistent session is kept.
        self.abort(CloseCause.DISABLED if exc.status == 403 else CloseCause.REVOKED, f"{exc.code}: {exc.message}")

    def _token_expired(self) -> None:
        self.abort(CloseCause.TOKEN_EXPIRED, "token expired")

    def _check_keepalive(self) -> None:
        if self._close_reason is None:
            self._apply_soon(self.session.keepalive_due(self._loop.time(), self._last_rx))

    async def _cleanup(self) -> None:
        self.session.close(CloseCause.CONNECTION_LOST, "closed")  # nothing more is handled (the will: _publish_will)
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
        await self._save_on_close()
        if self._shared.members:
            await self._shared.close()  # what the client did not acknowledge goes to another member
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()  # unacknowledged messages stay with the durable consumer
        if self._token_timer is not None:
            self._token_timer.cancel()
        if self.v5 is not None:
            await self._v5.closing(reason)  # DISCONNECT with a reason code; a session that ends with it
        resumed = self.ctx.release(self)  # whether a connection that took the session over resumes it
        self._flush()
        self.wire.close()
        claims = self.claims
        level = logging.WARNING if reason.startswith(("protocol error", "slow consumer")) else logging.INFO
        if claims is not None:
            log.log(level, "mqtt %s closed: %s", self.id, reason)
        else:
            log.log(level, "mqtt %s (%s) closed before CONNECT completed: %s", self.id, self.peer, reason)
        will = self.session.ended(self._publish_will)  # whether and when the will goes out
        if will is not None and claims is not None:
            if will.delay > 0 and self.session_key is not None:
                send = partial(self._send_will, claims, will.will)
                self.ctx.delay_will(self.session_key, will.delay, send, self, resumed)
            else:
                await self._send_will(claims, will.will)
        self.ctx.connections.discard(self)
        self.closed.set()

    async def _send_will(self, claims: Claims, will: Will) -> None:
        """Publish the will (``MqttSession.ended`` decided it goes out) [MQTT-3.1.2-8]."""
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
