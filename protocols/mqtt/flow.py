"""The flow state of one MQTT connection, as plain objects: no awaits, no clock, no sockets.

``MqttSession`` (``session.py``) owns one of each and applies them packet by packet:

- ``OutboundWindow``: packet identifiers and the in-flight window of messages
  the server sends at QoS 1 and 2, with the PUBACK / PUBREC-PUBREL-PUBCOMP flows.
- ``InboundQoS2``: packet identifiers of QoS 2 messages received and stored but
  not yet released, so a re-sent PUBLISH is not stored twice [MQTT-4.3.3-2].
- ``PendingAck``: a publish sent to the store, and the PUBACK or PUBREC that waits
  for the store's answer, so acknowledgements go out in order [MQTT-4.6.0-2].
- ``keepalive_deadline``: when a silent client is considered gone [MQTT-3.1.2-24].
- ``redelivery``: the QoS, DUP flag and packet identifier of a persistent
  session's stored message, sent for the first time or again [MQTT-3.3.1-1, 4.4.0-1].
- ``will_delay``: how long the will waits after the connection closed [MQTT-3.1.3-9].
- ``delivery_qos``, ``packet_id_for_seq`` and ``publish_ack``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from gateway.bus import PubAck as StoreAck
from gateway.errors import FlowGateError
from protocols.mqtt.codec import encode
from protocols.mqtt.packets import PubRec

T = TypeVar("T")

MAX_PACKET_ID = 65535
KEEPALIVE_GRACE = 1.5
PUBACK_HEADER = struct.Struct(">BBH")  # type, remaining length 2, packet id: .pack(0x40, 2, packet_id)


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


def redelivery(publish_qos: int, granted_qos: int, seq: int, redelivered: bool) -> tuple[int, bool, int | None]:
    """(QoS, DUP, packet identifier) of a persistent session's stored message, at stream sequence ``seq``.

    It goes out at the lower of the two QoS [MQTT-3.8.4-6]. At QoS 1/2 its
    identifier comes from ``seq``, so sending it again after a reconnect or a
    crash (``redelivered``) uses the identifier it had [MQTT-4.4.0-1], with DUP
    set [MQTT-3.3.1-1]; at QoS 0 it has neither, and DUP is 0 [MQTT-3.3.1-2].
    """
    qos = delivery_qos(publish_qos, granted_qos)
    if qos == 0:
        return 0, False, None
    return qos, redelivered, packet_id_for_seq(seq)


def will_delay(will_delay_interval: int | None, session_expiry_interval: int | None) -> float:
    """Seconds the will waits after the connection closed; ``session_expiry_interval`` ``None``: MQTT 3.1.1.

    MQTT 3.1.1 publishes it at once [MQTT-3.1.2-8]. MQTT 5 holds it for its Will
    Delay Interval, or until the session ends if that is sooner; a connection
    that resumes the session meanwhile cancels it [MQTT-3.1.3-9, 3.1.3.2.2].
    """
    if session_expiry_interval is None or not will_delay_interval:
        return 0.0
    return float(min(will_delay_interval, session_expiry_interval))


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
        self.ids: set[int] = set()  # read as is (len) on the hot path of each MQTT 5 publish

    def __contains__(self, packet_id: int) -> bool:
        return packet_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def stored(self, packet_id: int) -> None:
        self.ids.add(packet_id)

    def release(self, packet_id: int) -> None:
        """PUBREL: forget the identifier; it may carry a new message from now on [MQTT-4.3.3-2]."""
        self.ids.discard(packet_id)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(sorted(self.ids))

    def restore(self, ids: tuple[int, ...] | list[int]) -> None:
        self.ids.update(ids)


class PendingAck:
    """A publish sent to the store, and the PUBACK or PUBREC (or nothing, at QoS 0) that waits for its store.

    It is the publisher's ``then`` callback itself: no future and no scheduled
    callback per message. ``qos`` -1 marks an acknowledgement that waits for no
    store of its own, only for the ones before it.
    """

    __slots__ = ("error", "notify", "packet", "qos", "settled")

    def __init__(self, notify: Callable[[], None], packet: bytes | None, qos: int) -> None:
        self.notify = notify
        self.packet = packet
        self.qos = qos
        self.settled = False
        self.error: FlowGateError | None = None

    def __call__(self, ack: StoreAck | None, error: FlowGateError | None) -> None:
        self.settled = True
        self.error = error
        self.notify()


def ignore() -> None:
    """A ``PendingAck`` notification nobody listens to."""


def publish_ack(qos: int, packet_id: int) -> bytes | None:
    """PUBACK or PUBREC, encoded: the hot path of a QoS 1 publisher builds no packet object for it."""
    if qos == 1:
        return PUBACK_HEADER.pack(0x40, 2, packet_id)
    if qos == 2:
        return encode(PubRec(packet_id))
    return None
