"""The sans-I/O rules of one MQTT 3.1.1 connection: no awaits, no clock, no sockets.

This module owns what the specification says about packet order and flow
state, as plain objects the asyncio layer (``connection.py``) drives and the
tests exercise without an event loop:

- ``PacketGate``: CONNECT first [MQTT-3.1.0-1], never a second one [MQTT-3.1.0-2],
  nothing after DISCONNECT.
- ``check_connect``: the CONNACK return code for a CONNECT (protocol level,
  client identifier, credentials shape).
- ``OutboundWindow``: packet identifiers and the in-flight window of messages
  the server sends at QoS 1 and 2, with the PUBACK / PUBREC-PUBREL-PUBCOMP flows.
- ``InboundQoS2``: packet identifiers of QoS 2 messages received and stored but
  not yet released, so a re-sent PUBLISH is not stored twice [MQTT-4.3.3-2].
- ``keepalive_deadline``: when a silent client is considered gone [MQTT-3.1.2-24].
- ``delivery_qos`` and ``packet_id_for_seq``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from protocols.mqtt.packets import (
    CONNACK_ACCEPTED,
    CONNACK_BAD_CREDENTIALS,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_UNACCEPTABLE_PROTOCOL,
    Connect,
    Disconnect,
    Packet,
)

T = TypeVar("T")

MAX_CLIENT_ID_CHARS = 256
MAX_PACKET_ID = 65535
KEEPALIVE_GRACE = 1.5


class GateState(Enum):
    AWAIT_CONNECT = "await_connect"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The connection must be closed without an answer [MQTT-4.8.0-1]."""

    reason: str


class PacketGate:
    """Which packets may arrive in which state."""

    def __init__(self) -> None:
        self.state = GateState.AWAIT_CONNECT

    def admit(self, packet: Packet) -> ProtocolViolation | None:
        """``None`` if ``packet`` may be processed now, else why the connection must close."""
        if self.state is GateState.CONNECTED:
            if isinstance(packet, Connect):
                # "A Client can only send the CONNECT Packet once over a Network Connection" [MQTT-3.1.0-2].
                self.state = GateState.CLOSED
                return ProtocolViolation("second CONNECT on one connection [MQTT-3.1.0-2]")
            if isinstance(packet, Disconnect):
                self.state = GateState.CLOSED
            return None
        if self.state is GateState.AWAIT_CONNECT:
            if isinstance(packet, Connect):
                return None
            # "the first Packet sent from the Client to the Server MUST be a CONNECT Packet" [MQTT-3.1.0-1].
            self.state = GateState.CLOSED
            return ProtocolViolation(f"{type(packet).__name__} before CONNECT [MQTT-3.1.0-1]")
        return ProtocolViolation("packet after the connection ended")

    def accepted(self) -> None:
        self.state = GateState.CONNECTED

    def close(self) -> None:
        self.state = GateState.CLOSED


def valid_client_id(client_id: str) -> bool:
    """Client identifiers we accept: any UTF-8 the codec let through, up to 256 characters.

    The spec only requires 1-23 of ``[0-9a-zA-Z]`` to be accepted and allows more
    [MQTT-3.1.3-5]; we take longer ids and other characters, since ids are
    hashed before they reach NATS names.
    """
    return len(client_id) <= MAX_CLIENT_ID_CHARS


KNOWN_PROTOCOL_NAMES = ("MQTT", "MQIsdp")  # 3.1.1 and its predecessor 3.1


def foreign_protocol(connect: Connect) -> bool:
    """A protocol name that is not MQTT's: close without CONNACK, as [MQTT-3.1.2-1] allows."""
    return connect.protocol_name not in KNOWN_PROTOCOL_NAMES


def check_connect(connect: Connect) -> int:
    """The CONNACK return code for ``connect`` before its token is verified (0 = go on)."""
    if connect.protocol_name != "MQTT" or connect.protocol_level != 4:
        # Unsupported protocol level: answer 1, then close [MQTT-3.1.2-2].
        return CONNACK_UNACCEPTABLE_PROTOCOL
    if not connect.client_id and not connect.clean_session:
        # A zero-byte ClientId needs CleanSession 1 [MQTT-3.1.3-7, 3.1.3-8].
        return CONNACK_IDENTIFIER_REJECTED
    if not valid_client_id(connect.client_id):
        return CONNACK_IDENTIFIER_REJECTED
    if connect.username is None or connect.username.lower() != "bearer" or not connect.password:
        return CONNACK_BAD_CREDENTIALS
    return CONNACK_ACCEPTED


def keepalive_deadline(keepalive: int, last_activity: float) -> float | None:
    """When to drop a client silent since ``last_activity``: 1.5 x keepalive [MQTT-3.1.2-24]; 0 = never."""
    if keepalive <= 0:
        return None
    return last_activity + KEEPALIVE_GRACE * keepalive


def delivery_qos(publish_qos: int, granted_qos: int) -> int:
    """A message goes out at the lower of its publish QoS and the subscription's [MQTT-3.8.4-6]."""
    return publish_qos if publish_qos < granted_qos else granted_qos


def packet_id_for_seq(seq: int) -> int:
    """A packet identifier derived from a stream sequence (1..65535).

    Persistent sessions use it so a message redelivered after a reconnect, even
    through another replica, carries the same identifier as before: a client
    still holding that QoS 2 identifier answers PUBREC without delivering the
    message twice [MQTT-4.3.3-2].
    """
    return (seq - 1) % MAX_PACKET_ID + 1


class FlowState(Enum):
    AWAIT_PUBACK = "await_puback"
    AWAIT_PUBREC = "await_pubrec"
    AWAIT_PUBCOMP = "await_pubcomp"


@dataclass(slots=True)
class InFlight(Generic[T]):
    qos: int
    state: FlowState
    item: T


class OutboundWindow(Generic[T]):
    """Messages sent to the client at QoS 1/2 and not yet completed.

    ``size`` bounds how many are in flight; packet identifiers are unique among
    them [MQTT-2.3.1-2] and reused only once their flow completed [MQTT-2.3.1-3].
    """

    def __init__(self, size: int) -> None:
        if not 1 <= size <= MAX_PACKET_ID:
            raise ValueError("window size must be 1..65535")
        self.size = size
        self._flights: dict[int, InFlight[T]] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def free(self) -> int:
        return self.size - len(self._flights)

    def __contains__(self, packet_id: int) -> bool:
        return packet_id in self._flights

    def allocate(self) -> int | None:
        """A free packet identifier, or ``None`` while the window is full."""
        if len(self._flights) >= self.size:
            return None
        candidate = self._next
        while candidate in self._flights:
            candidate = candidate % MAX_PACKET_ID + 1
        self._next = candidate % MAX_PACKET_ID + 1
        return candidate

    def put(self, qos: int, item: T) -> int | None:
        """``allocate`` and ``add`` in one step (a QoS 1/2 delivery's hot path), or ``None`` while the window is full."""
        flights = self._flights
        if len(flights) >= self.size:
            return None
        candidate = self._next
        while candidate in flights:
            candidate = candidate % MAX_PACKET_ID + 1
        self._next = candidate % MAX_PACKET_ID + 1
        flights[candidate] = InFlight(qos, FlowState.AWAIT_PUBACK if qos == 1 else FlowState.AWAIT_PUBREC, item)
        return candidate

    def can_use(self, packet_id: int) -> bool:
        """Whether a given (derived) identifier may be used now."""
        return len(self._flights) < self.size and packet_id not in self._flights

    def add(self, packet_id: int, qos: int, item: T) -> None:
        if packet_id in self._flights or not 1 <= packet_id <= MAX_PACKET_ID or qos not in (1, 2):
            raise ValueError(f"packet id {packet_id} is in use or invalid")
        state = FlowState.AWAIT_PUBACK if qos == 1 else FlowState.AWAIT_PUBREC
        self._flights[packet_id] = InFlight(qos, state, item)

    def puback(self, packet_id: int) -> T | None:
        """The completed QoS 1 message, or ``None`` if nothing waits for this PUBACK (ignored)."""
        flight = self._flights.get(packet_id)
        if flight is None or flight.state is not FlowState.AWAIT_PUBACK:
            return None
        del self._flights[packet_id]
        return flight.item

    def pubrec(self, packet_id: int) -> bool:
        """Whether to answer PUBREL: true for an identifier in flight at QoS 2 [MQTT-4.3.3-1].

        A repeated PUBREC (the client re-sent it) is answered with PUBREL again.
        """
        flight = self._flights.get(packet_id)
        if flight is None or flight.qos != 2:
            return False
        flight.state = FlowState.AWAIT_PUBCOMP
        return True

    def get(self, packet_id: int) -> T | None:
        flight = self._flights.get(packet_id)
        return None if flight is None else flight.item

    def released(self, packet_id: int, item: T) -> None:
        """Restore a QoS 2 flight whose PUBREC came before a reconnect: it now waits for PUBCOMP."""
        self._flights[packet_id] = InFlight(2, FlowState.AWAIT_PUBCOMP, item)

    def pubcomp(self, packet_id: int) -> T | None:
        flight = self._flights.get(packet_id)
        if flight is None or flight.state is not FlowState.AWAIT_PUBCOMP:
            return None
        del self._flights[packet_id]
        return flight.item

    def items(self) -> Iterator[tuple[int, InFlight[T]]]:
        """In-flight messages in the order they were sent (for re-sending on resume [MQTT-4.6.0-1])."""
        return iter(list(self._flights.items()))

    def clear(self) -> list[T]:
        items = [flight.item for flight in self._flights.values()]
        self._flights.clear()
        return items


class InboundQoS2:
    """QoS 2 packet identifiers received and stored, awaiting PUBREL (Method B of [MQTT-4.3.3-2])."""

    def __init__(self) -> None:
        self._ids: set[int] = set()

    def __contains__(self, packet_id: int) -> bool:
        return packet_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def stored(self, packet_id: int) -> None:
        self._ids.add(packet_id)

    def release(self, packet_id: int) -> None:
        """PUBREL: forget the identifier; it may carry a new message from now on [MQTT-4.3.3-2]."""
        self._ids.discard(packet_id)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(sorted(self._ids))

    def restore(self, ids: tuple[int, ...] | list[int]) -> None:
        self._ids.update(ids)
