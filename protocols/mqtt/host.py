"""What the layers of one MQTT connection share: its transport (``Wire``) and its state (``ConnectionHost``).

``MqttConnection`` (``connection.py``) is assembled from one class per layer,
each in its own module: ``Inbound`` (the reader: bytes to the session, pause
and resume, running the session's actions), ``Publishing`` (a client's PUBLISH
to the store), ``Subscribing`` (SUBSCRIBE/UNSUBSCRIBE, the persistent session's
record), ``Outbound`` (deliveries, the in-flight window and backlog, the write
buffer, billing). ``ConnectionHost`` declares the state they share and the
methods one layer calls in another; ``MqttConnection.__init__`` sets it all up.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

from prometheus_client import Counter

from auth.tokens import Claims
from gateway.billing import BillingGuard
from gateway.bus.session_consumer import SessionConsumer, SessionMessage
from gateway.events import Session
from gateway.message_meta import MessageMeta
from gateway.payload import Delivery
from gateway.publishing import Outlet
from gateway.topics import Namespace
from protocols.mqtt.actions import Action, Close
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.codec5 import ServerDecoder
from protocols.mqtt.context import MqttContext
from protocols.mqtt.flow import OutboundWindow, PendingAck
from protocols.mqtt.packets import Packet
from protocols.mqtt.session import MqttSession, Result
from protocols.mqtt.shared import SharedSubscriptions
from protocols.mqtt.subscriptions import OneCopy, Outgoing, Subscription
from protocols.mqtt.v5 import V5Session
from protocols.mqtt.v5_connection import V5Hooks


class Wire(Protocol):
    """What a connection needs from its transport."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class ConnectionHost:
    """The state of one connection, shared by its layers (``MqttConnection.__init__`` documents each),
    and the methods one layer calls in another (each implemented by one layer)."""

    ctx: MqttContext
    wire: Wire
    id: str
    session: MqttSession
    v5: V5Session | None
    _v5: V5Hooks
    _shared: SharedSubscriptions
    _loop: asyncio.AbstractEventLoop
    _decoder: ServerDecoder
    _guard: BillingGuard
    _delivered: Counter
    # the reader
    _inbox: deque[Packet | Action]
    _idle: bool  # the reader waits for packets: data_received may hand them to the session itself
    _wake: asyncio.Event
    _reading_paused: bool
    _throttled: bool
    _peer_gone: bool
    _close_reason: str | None
    _disconnect_code: int | None
    _publish_will: bool
    _last_rx: float  # the loop's time when the client last sent anything (keepalive)
    _now: dict[type[Any], Callable[[Any], bool]]
    _later: dict[type[Action], Callable[[Any], Awaitable[None]]]
    # the client's publishes
    _acks: deque[PendingAck]
    _acks_drained: asyncio.Event
    _overfull: bool
    _outlets: tuple[dict[str, Outlet], dict[str, Outlet]]
    _bare_meta: MessageMeta | None  # what a PUBLISH without properties carries (V5Hooks.bare_meta)
    # the session
    claims: Claims | None
    session_key: str | None
    events: Session | None
    _subs: dict[str, Subscription]
    _one: OneCopy | None  # when some two of ``_subs``' filters overlap: one copy per live delivery (``_one_copy``)
    _bus_bound: bool
    _dirty: bool
    _saver: asyncio.Task[None] | None
    _consumer: SessionConsumer | None
    # deliveries
    _wbuf: list[bytes]
    _flush_scheduled: bool
    _write_paused: bool
    _window: OutboundWindow[Outgoing]
    _backlog: deque[Outgoing]
    _delivered_count: int
    _billing_namespace: Namespace | None
    _unbilled: int

    # -- called from one layer in another --

    @abstractmethod
    def abort(self, cause: CloseCause, reason: str) -> None: ...

    @abstractmethod
    def _fail(self, cause: CloseCause, reason: str) -> NoReturn: ...

    @abstractmethod
    def _stop(self, close: Close) -> NoReturn: ...

    @abstractmethod
    def _apply_soon(self, result: Result) -> None: ...

    @abstractmethod
    async def _throttle(self, seconds: float) -> None: ...

    @abstractmethod
    async def _settle(self) -> None: ...

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _send(self, packet: Packet) -> None: ...

    @abstractmethod
    def _queue_ready(self, packet: bytes) -> None: ...

    @abstractmethod
    def _drain_acks(self) -> None: ...

    @abstractmethod
    def _queue_out(self, item: Outgoing) -> None: ...

    @abstractmethod
    def _want_more(self) -> None: ...

    @abstractmethod
    def _bill(self, namespace: Namespace | None) -> None: ...

    @abstractmethod
    def count_delivery(self, namespace: Namespace) -> None: ...

    @abstractmethod
    async def _save_session(self) -> None: ...

    @abstractmethod
    async def _remove_sinks(self, sub: Subscription) -> None: ...

    @abstractmethod
    def _on_session_message(self, message: SessionMessage) -> None: ...

    @abstractmethod
    def deliver_live(self, subscription: Subscription, delivery: Delivery) -> None: ...
