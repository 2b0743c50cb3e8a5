"""The states of one MQTT connection and ``TABLE``: which packet each state admits, and who handles it.

``MqttSession`` (``session.py``) dispatches every packet through ``TABLE``, a
row per state, each (state, packet type) pair naming the session's handler;
anything not in the table is a protocol violation (``violation_reason``).
``PacketGate`` is the same table without the handlers, for tools that only
check the order of packets::

    AWAIT_CONNECT --CONNECT--> CONNECTING --accepted--> CONNECTED --DISCONNECT--> CLOSED
          |                        |                       |
          +--anything else---------+--refused--------------+--violation, close--> CLOSED
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from protocols.mqtt.packets import (
    Auth,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)


class State(Enum):
    AWAIT_CONNECT = "await_connect"  # nothing but CONNECT may come [MQTT-3.1.0-1]
    CONNECTING = "connecting"  # CONNECT passed its checks: its token and session are being looked up
    CONNECTED = "connected"
    CLOSED = "closed"  # nothing more is handled


GateState = State

# (state, packet type) -> the MqttSession method handling it; anything else is a protocol violation.
TABLE: dict[tuple[State, type[Packet]], str] = {
    (State.AWAIT_CONNECT, Connect): "_on_connect",
    (State.CONNECTED, Publish): "_on_publish",
    (State.CONNECTED, PubAck): "_on_puback",
    (State.CONNECTED, PubRec): "_on_pubrec",
    (State.CONNECTED, PubRel): "_on_pubrel",
    (State.CONNECTED, PubComp): "_on_pubcomp",
    (State.CONNECTED, Subscribe): "_on_subscribe",
    (State.CONNECTED, Unsubscribe): "_on_unsubscribe",
    (State.CONNECTED, PingReq): "_on_pingreq",
    (State.CONNECTED, Disconnect): "_on_disconnect",
    (State.CONNECTED, Auth): "_on_auth",
}


def violation_reason(state: State, packet: Packet) -> str:
    """Why ``packet`` may not come in ``state`` (it is not in ``TABLE``)."""
    name = type(packet).__name__
    if state is State.AWAIT_CONNECT:
        # "the first Packet sent from the Client to the Server MUST be a CONNECT Packet" [MQTT-3.1.0-1].
        return f"{name} before CONNECT [MQTT-3.1.0-1]"
    if state is State.CLOSED:
        return "packet after the connection ended"
    if type(packet) is Connect:
        # "A Client can only send the CONNECT Packet once over a Network Connection" [MQTT-3.1.0-2].
        return "second CONNECT on one connection [MQTT-3.1.0-2]"
    return f"unexpected {name} while {state.value}"


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The connection must be closed without an answer [MQTT-4.8.0-1]."""

    reason: str


class PacketGate:
    """``TABLE`` without its handlers: which packets may arrive now (for tools that only check the order)."""

    def __init__(self) -> None:
        self.state = State.AWAIT_CONNECT

    def admit(self, packet: Packet) -> ProtocolViolation | None:
        """``None`` if ``packet`` may be processed now, else why the connection must close."""
        if (self.state, type(packet)) in TABLE:
            if type(packet) is Disconnect:
                self.state = State.CLOSED
            return None
        reason = violation_reason(self.state, packet)
        self.state = State.CLOSED
        return ProtocolViolation(reason)

    def accepted(self) -> None:
        self.state = State.CONNECTED

    def close(self) -> None:
        self.state = State.CLOSED
