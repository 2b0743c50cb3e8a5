"""One MQTT connection's protocol state machine, sans-I/O: packets in, actions out; no awaits, no clock, no sockets.

``MqttSession.receive(packet)`` looks the packet up in ``TABLE`` (``states.py``,
with the states and their diagram), one entry per (state, packet type) the
specification allows, and returns what the connection must do (``actions.py``):
a packet to send, a message to store, subscriptions to add or remove, the
session to save, a timer to set, a close with or without the will. Anything
not in the table is a protocol violation. The connection reports back what
needed the gateway (``accepted``/``refused`` after a CONNECT, ``published``
after a store, ``reauthenticated``) and that it closed (``ended``: whether and
when the will goes out); time comes in as an argument (``keepalive_due``).
``redelivery`` is how a persistent session's stored messages go out, the first
time or again. The flow state and rules it applies live in ``flow.py``; the
CONNECT checks in ``connect_rules.py`` (``v5.py`` for MQTT 5).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.errors import FlowGateError
from protocols.mqtt.actions import (
    SAVE_SESSION,
    Action,
    AddSubscriptions,
    Authenticate,
    Close,
    Complete,
    PublishWill,
    Reauthenticate,
    Release,
    RemoveSubscriptions,
    Send,
    SendAfterAcks,
    SetTimer,
    Store,
    StoreFailed,
)
from protocols.mqtt.close_causes import CloseCause, closing
from protocols.mqtt.codec import encode
from protocols.mqtt.codec5 import encode5
from protocols.mqtt.connect_rules import check_connect, foreign_protocol, valid_client_id
from protocols.mqtt.flow import (
    PUBACK_HEADER,
    InboundQoS2,
    OutboundWindow,
    PendingAck,
    delivery_qos,
    ignore,
    keepalive_deadline,
    packet_id_for_seq,
    publish_ack,
    redelivery,
    will_delay,
)
from protocols.mqtt.packets import (
    CONNACK_ACCEPTED,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
    Will,
)
from protocols.mqtt.properties import Properties, ReasonCode
from protocols.mqtt.states import TABLE, GateState, PacketGate, ProtocolViolation, State, violation_reason
from protocols.mqtt.subscriptions import Outgoing
from protocols.mqtt.v5 import RECEIVE_MAXIMUM, V5Session, check_connect5, connack_reason

__all__ = [  # the flow primitives and CONNECT checks are reached through this module too
    "TABLE",
    "GateState",
    "InboundQoS2",
    "MqttSession",
    "OutboundWindow",
    "PacketGate",
    "ProtocolViolation",
    "Result",
    "State",
    "check_connect",
    "delivery_qos",
    "foreign_protocol",
    "keepalive_deadline",
    "packet_id_for_seq",
    "redelivery",
    "valid_client_id",
    "will_delay",
]

R = ReasonCode
TRACK_EVERY = 16  # QoS 0: one publish in this many is acknowledged by the store (bounds how far a client runs ahead)
_PINGRESP = Send(encode(PingResp()))  # the same two bytes in MQTT 5 [MQTT-3.12.4-1]

Result = Action | list[Action] | None  # what handling one packet (or one answer from the gateway) asks for


class MqttSession:
    """The protocol state of one MQTT connection (3.1.1 or 5), driven packet by packet."""

    def __init__(self, *, window: int, max_packet_size: int, ack_ready: Callable[[], None] = ignore) -> None:
        self.state = State.AWAIT_CONNECT
        self.v5: V5Session | None = None  # set by an MQTT 5 CONNECT
        self.encode: Callable[[Packet], bytes] = encode
        self.window: OutboundWindow[Outgoing] = OutboundWindow(window)
        self.inbound = InboundQoS2()
        self.pubrel: set[int] = set()  # persistent sessions: QoS 2 ids between PUBREC and PUBCOMP
        self.acks: deque[PendingAck] = deque()  # PUBACK/PUBREC waiting for their stores, in order
        self.keepalive = 0
        self.persistent = False
        self.established = False  # the CONNECT was accepted (CONNACK 0): only then can a will go out
        self.will: Will | None = None  # the CONNECT's will, until a clean DISCONNECT discards it
        self.expire_now = False  # MQTT 5: the session ends with this connection (Session Expiry Interval 0)
        self._window_size = window
        self._max_packet_size = max_packet_size
        self._ack_ready = ack_ready  # called when the store answered one publish (``PendingAck``)
        self._qos0_sent = 0
        self._qos1_unacknowledged = 0  # MQTT 5: QoS 1 publishes whose PUBACK is not sent yet
        handlers: dict[State, dict[type[Packet], Callable[[Any], Result]]] = {state: {} for state in State}
        for (state, kind), name in TABLE.items():
            handlers[state][kind] = getattr(self, name)
        self._handlers = handlers
        self.row = handlers[State.AWAIT_CONNECT]  # TABLE's row for the current state: packet type -> handler

    def _enter(self, state: State) -> None:
        self.state = state
        self.row = self._handlers[state]

    def receive(self, packet: Packet) -> Result:
        """What to do about one packet from the client, in the order they came [MQTT-4.6.0-2]."""
        handler = self.row.get(type(packet))
        if handler is None:
            return self.violation(packet)
        return handler(packet)

    def violation(self, packet: Packet) -> Close:
        """A packet ``TABLE`` has no handler for in this state: the connection closes [MQTT-4.8.0-1]."""
        return self.close(CloseCause.PROTOCOL_ERROR, f"protocol error: {violation_reason(self.state, packet)}")

    def malformed(self, reason: str, code: int) -> Close:
        """The decoder rejected the bytes after the packets already handled [MQTT-4.8.0-1]."""
        return self.close(CloseCause.MALFORMED, f"protocol error: {reason}", code)

    def close(self, cause: CloseCause, reason: str, error_code: int | None = None) -> Close:
        """End the session; ``cause`` decides the will and MQTT 5's DISCONNECT (``close_causes.py``): the will
        is published unless the client ended it cleanly [MQTT-3.1.2-8, 3.1.2-10]."""
        self._enter(State.CLOSED)
        return closing(cause, reason, error_code)

    # -- CONNECT --------------------------------------------------------------------------------

    def _on_connect(self, connect: Connect) -> Result:
        if foreign_protocol(connect):
            reason = f"protocol error: unknown protocol name {connect.protocol_name!r} [MQTT-3.1.2-1]"
            return self.close(CloseCause.FOREIGN_PROTOCOL, reason)
        v5 = None
        if connect.protocol_level == 5:
            v5 = self.v5 = V5Session.from_connect(connect)
            self.encode = encode5
        code = check_connect(connect) if v5 is None else check_connect5(connect)
        if code != CONNACK_ACCEPTED:
            return list(self.refused(code, f"CONNECT refused with return code {code}"))
        self._enter(State.CONNECTING)
        if v5 is None:
            self.persistent = not connect.clean_session
        else:
            # Clean Start 0 resumes the stored session even when this connection's Session Expiry Interval
            # is 0 [MQTT-3.1.2-5]; that session then ends when this connection closes [3.1.2.11.2].
            self.persistent = v5.session_expiry_interval > 0 or not connect.clean_session
            self.expire_now = self.persistent and v5.session_expiry_interval == 0
        self.keepalive = connect.keepalive if v5 is None else v5.keepalive
        self.will = connect.will
        if v5 is not None:  # the client's Receive Maximum bounds the deliveries in flight [MQTT-3.3.4-9]
            self.window = OutboundWindow(min(self._window_size, v5.receive_maximum))
        return Authenticate(connect)

    def refused(self, code: int, reason: str, error: FlowGateError | None = None) -> tuple[Send, Close]:
        """A refused CONNECT gets its CONNACK, then the connection closes [MQTT-3.2.2-5, 3.2.2-7]."""
        if self.v5 is None:
            ack = ConnAck(False, code)
        else:
            ack = ConnAck(False, connack_reason(code, error), Properties(reason_string=reason[:200]))
        return Send(self.encode(ack)), self.close(CloseCause.CONNECT_REFUSED, reason)

    def accepted(self, present: bool, assigned_id: str | None, last_activity: float) -> list[Action]:
        """The token and session checked out: CONNACK; Session Present is 0 for a clean session
        [MQTT-3.2.2-1], else whether state was found [MQTT-3.2.2-2]."""
        self._enter(State.CONNECTED)
        self.established = True
        v5 = self.v5
        if v5 is None:
            ack = ConnAck(present, CONNACK_ACCEPTED)
        else:  # an assigned client identifier is returned [MQTT-3.2.2-16]
            ack = v5.connack(present, assigned_id, self._max_packet_size, RECEIVE_MAXIMUM)
        actions: list[Action] = [Send(self.encode(ack))]
        deadline = keepalive_deadline(self.keepalive, last_activity)
        if deadline is not None:
            actions.append(SetTimer(deadline))
        return actions

    def restore(self, inbound: tuple[int, ...], pubrel: tuple[int, ...]) -> list[Action]:
        """A persistent session's QoS 2 state: PUBREC came before the disconnect, so PUBREL goes
        out again with the original identifier [MQTT-4.4.0-1]."""
        self.inbound.restore(inbound)
        actions: list[Action] = []
        for packet_id in pubrel:
            self.pubrel.add(packet_id)
            self.window.released(packet_id, Outgoing("", b"", 2, packet_id=packet_id))
            actions.append(Send(self.encode(PubRel(packet_id))))
        return actions

    def ended(self, will: bool) -> PublishWill | None:
        """The connection closed: its will, if it goes out, and how long it waits.

        ``will`` is the close's own, from its cause's row in ``CLOSES``
        (``close_causes.py``): the ``Close`` this session returned (a clean
        DISCONNECT discards the will [MQTT-3.1.2-10, 3.14.4-3], MQTT 5's 0x04
        keeps it [3.14.2.1]; a protocol error, a keepalive timeout keep it), or
        the server's reason to close (a lost network, a session taken over,
        keep it [MQTT-3.1.2-8]). A CONNECT never accepted has no will to send.
        MQTT 5 holds it back for its Will Delay Interval, at most until the
        session expires (the expiry the DISCONNECT may have set) [MQTT-3.1.3-9].
        """
        self._enter(State.CLOSED)
        if not will or not self.established or self.will is None:
            return None
        v5 = self.v5
        expiry = None if v5 is None else v5.session_expiry_interval
        return PublishWill(self.will, will_delay(self.will.properties.will_delay_interval, expiry))

    # A persistent session's stored message, sent the first time or again (flow.py) [MQTT-3.3.1-1, 4.4.0-1].
    redelivery = staticmethod(redelivery)

    def keepalive_due(self, now: float, last_activity: float) -> Action | None:
        """Nothing received for 1.5 x keepalive: the client is gone, its will goes out [MQTT-3.1.2-24]."""
        deadline = keepalive_deadline(self.keepalive, last_activity)
        if deadline is None or self.state is State.CLOSED:
            return None
        if now >= deadline:
            return self.close(CloseCause.KEEPALIVE_TIMEOUT, f"keepalive timeout ({self.keepalive}s)")
        return SetTimer(deadline)

    # -- PUBLISH from the client ------------------------------------------------------------------

    def _on_publish(self, packet: Publish) -> Result:
        if packet.qos == 2 and (packet.packet_id or 0) in self.inbound:
            # Already stored, PUBREL not yet received: acknowledge again, store nothing [MQTT-4.3.3-2].
            return SendAfterAcks(encode(PubRec(packet.packet_id or 0)))
        return Store(packet)

    def pending(self, packet: Publish) -> PendingAck | None:
        """What waits for the store's answer to ``packet`` (its PUBACK/PUBREC), or ``None`` when nothing does.

        QoS 0 is fire-and-track: one publish in ``TRACK_EVERY`` asks for the store's answer.
        """
        qos = packet.qos
        if qos == 1:  # the commonest: its PUBACK packed here (``publish_ack`` without a call per message)
            return PendingAck(self._ack_ready, PUBACK_HEADER.pack(0x40, 2, packet.packet_id or 0), 1)
        if qos == 0 and self._qos0_sent % TRACK_EVERY:
            return None
        return PendingAck(self._ack_ready, publish_ack(qos, packet.packet_id or 0), qos)

    def published(self, packet: Publish, pending: PendingAck | None) -> Result:
        """``packet`` went to the store: its acknowledgement, if any, follows the store's [MQTT-4.6.0-2]."""
        qos = packet.qos
        result: Result = None
        if qos == 0:
            self._qos0_sent += 1
        elif qos == 2:
            self.inbound.stored(packet.packet_id or 0)
            if self.persistent:
                result = SAVE_SESSION
        if qos and self.v5 is not None:
            if qos == 1:
                self._qos1_unacknowledged += 1
            if self._qos1_unacknowledged + len(self.inbound.ids) > RECEIVE_MAXIMUM:
                # More unacknowledged than the Receive Maximum we announced: 0x93 [MQTT-3.3.4-8].
                reason = f"more than {RECEIVE_MAXIMUM} QoS 1/2 publishes unacknowledged"
                result = self.close(CloseCause.RECEIVE_MAXIMUM_EXCEEDED, reason)
        if pending is not None:
            self.acks.append(pending)
        return result

    def after_acks(self, data: bytes) -> bool:
        """An acknowledgement that waits for no store: True to send it now, else it waits behind the others."""
        if not self.acks:
            return True
        ready = PendingAck(self._ack_ready, data, -1)
        ready.settled = True
        self.acks.append(ready)
        return False

    def drain_acks(self, out: list[bytes]) -> Result:
        """Move the acknowledgements whose stores answered, in order, to ``out``."""
        acks = self.acks
        result: list[Action] | None = None
        while acks:
            ack = acks[0]
            if not ack.settled:
                break
            acks.popleft()
            if ack.qos == 1 and self.v5 is not None:
                self._qos1_unacknowledged -= 1
            error = ack.error
            if error is not None:
                result = result or []
                if ack.qos == 0:
                    result.append(StoreFailed(error))
                    continue
                # No acknowledgement: the client re-sends after reconnecting [MQTT-4.4.0-1].
                acks.clear()
                result.append(self.close(CloseCause.NOT_STORED, f"message not stored: {error}"))
                break
            if ack.packet is not None:
                out.append(ack.packet)
        return result

    # -- acknowledgements of deliveries ----------------------------------------------------------------

    def _on_puback(self, packet: PubAck) -> Result:
        item = self.window.puback(packet.packet_id)
        return None if item is None else Complete(item)  # a PUBACK for nothing in flight is ignored

    def _on_pubrec(self, packet: PubRec) -> Result:
        packet_id = packet.packet_id
        if not self.window.pubrec(packet_id):  # [MQTT-4.3.3-1]; a repeated PUBREC gets PUBREL again
            return None
        pubrel = Send(self.encode(PubRel(packet_id)))
        item = self.window.get(packet_id)
        if item is None or item.ack_subject is None or item.consumer is not None or not self.persistent:
            return pubrel  # (a shared subscription's message is acknowledged at PUBCOMP)
        self.pubrel.add(packet_id)
        return [Release(packet_id, item), pubrel]

    def _on_pubcomp(self, packet: PubComp) -> Result:
        packet_id = packet.packet_id
        item = self.window.pubcomp(packet_id)
        complete = None if item is None else Complete(item)
        if packet_id not in self.pubrel:
            return complete
        self.pubrel.discard(packet_id)
        return [SAVE_SESSION] if complete is None else [SAVE_SESSION, complete]

    def _on_pubrel(self, packet: PubRel) -> Result:
        packet_id = packet.packet_id
        # Forget the id, then PUBCOMP, even for an id we no longer know [MQTT-4.3.3-2].
        if packet_id in self.inbound:
            self.inbound.release(packet_id)
            pubcomp = SendAfterAcks(encode(PubComp(packet_id)))
            return [SAVE_SESSION, pubcomp] if self.persistent else pubcomp
        if self.v5 is None:
            return SendAfterAcks(encode(PubComp(packet_id)))
        return SendAfterAcks(encode5(PubComp(packet_id, R.PACKET_IDENTIFIER_NOT_FOUND)))  # [3.7.2.1]

    # -- the rest ------------------------------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> Result:
        return AddSubscriptions(packet)

    def _on_unsubscribe(self, packet: Unsubscribe) -> Result:
        return RemoveSubscriptions(packet)

    def _on_pingreq(self, packet: PingReq) -> Result:
        return _PINGRESP

    def _on_disconnect(self, packet: Disconnect) -> Result:
        """A clean DISCONNECT discards the will [MQTT-3.1.2-10, 3.14.4-3]; MQTT 5's 0x04 keeps it [3.14.2.1]."""
        v5 = self.v5
        will = False
        if v5 is not None:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if v5.session_expiry_interval == 0 and expiry > 0:
                    # A session that was to end with the connection cannot be kept now [MQTT-3.14.2-2].
                    reason = "protocol error: DISCONNECT sets a Session Expiry Interval"
                    return self.close(CloseCause.PROTOCOL_ERROR, reason)
                v5.expiry_changed = expiry != v5.session_expiry_interval
                v5.session_expiry_interval = expiry
                self.expire_now = expiry == 0
            will = packet.reason_code == R.DISCONNECT_WITH_WILL
        if not will:
            self.will = None  # deleted, not published [MQTT-3.1.2-10]
        cause = CloseCause.CLIENT_DISCONNECT_WITH_WILL if will else CloseCause.CLIENT_DISCONNECT
        return self.close(cause, "client disconnected")

    def _on_auth(self, packet: Auth) -> Result:
        """MQTT 5 re-authentication [4.12.1], with the CONNECT's method [MQTT-4.12.0-1, 4.12.1-1]."""
        v5 = self.v5
        if v5 is None or v5.auth_method is None or packet.properties.authentication_method != v5.auth_method:
            return self.close(
                CloseCause.PROTOCOL_ERROR, "protocol error: AUTH without the CONNECT's authentication method"
            )
        if packet.reason_code != R.RE_AUTHENTICATE:
            return self.close(CloseCause.PROTOCOL_ERROR, "protocol error: AUTH that does not re-authenticate")
        return Reauthenticate(packet)

    def reauthenticated(self) -> Send:
        """The fresh token checked out: AUTH 0x00 with the same method."""
        assert self.v5 is not None
        return Send(encode5(Auth(R.SUCCESS, Properties(authentication_method=self.v5.auth_method))))
