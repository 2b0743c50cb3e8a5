"""What ``MqttSession`` asks its connection to do: one small value per kind of action.

The session (``session.py``) decides; the connection (``connection.py`` and the
layers around it) carries the actions out in the order they come, against the
socket and the gateway's services. Actions that need the gateway (verifying a
token, storing a message, adding subscriptions) report back to the session
through its methods (``accepted``, ``refused``, ``published``...).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import FlowGateError
from protocols.mqtt.packets import Auth, Connect, Publish, Subscribe, Unsubscribe, Will
from protocols.mqtt.subscriptions import Outgoing


class Action:
    """The base of every action (the connection looks its executor up by the action's type)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Send(Action):
    """Write an encoded packet now (CONNACK, PINGRESP, PUBREL, AUTH)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendAfterAcks(Action):
    """Write an acknowledgement after every earlier PUBACK/PUBREC still waiting for its store [MQTT-4.6.0-2]."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticate(Action):
    """Verify a CONNECT's token and open its session; answer with ``accepted`` or ``refused``."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class Reauthenticate(Action):
    """MQTT 5 AUTH: verify the fresh token [4.12.1]; answer with ``reauthenticated``."""

    auth: Auth


@dataclass(slots=True)  # not frozen, as Complete: a frozen __init__ costs an object.__setattr__ per message
class Store(Action):
    """Send a client's PUBLISH to the store; report it with ``published`` once submitted."""

    publish: Publish
    refusal: FlowGateError | None = None  # the connection's note: the gateway refused it when tried at once


@dataclass(slots=True)
class Complete(Action):
    """The client completed a QoS 1/2 delivery (PUBACK or PUBCOMP): acknowledge it upstream, send more."""

    item: Outgoing


@dataclass(frozen=True, slots=True)
class Release(Action):
    """A QoS 2 delivery reached the client (PUBREC): a persistent session records the PUBREL before
    the message is acknowledged upstream, so a crash in between re-sends the PUBLISH [MQTT-4.3.3-1]."""

    packet_id: int
    item: Outgoing


@dataclass(frozen=True, slots=True)
class AddSubscriptions(Action):
    """SUBSCRIBE: check and add each filter, then SUBACK [MQTT-3.8.4-1]."""

    subscribe: Subscribe


@dataclass(frozen=True, slots=True)
class RemoveSubscriptions(Action):
    """UNSUBSCRIBE: remove each filter, then UNSUBACK even when nothing matched [MQTT-3.10.4-4]."""

    unsubscribe: Unsubscribe


@dataclass(frozen=True, slots=True)
class StoreFailed(Action):
    """The store refused a QoS 0 message (nothing to tell the client): counted and logged."""

    error: FlowGateError


@dataclass(frozen=True, slots=True)
class SaveSession(Action):
    """A persistent session's state changed (QoS 2 identifiers): save it soon."""


@dataclass(frozen=True, slots=True)
class SetTimer(Action):
    """Call ``MqttSession.keepalive_due`` again at ``deadline`` (the caller's clock) [MQTT-3.1.2-24]."""

    deadline: float


@dataclass(frozen=True, slots=True)
class Close(Action):
    """End the connection: ``code`` is MQTT 5's DISCONNECT reason (``None``: none is sent), ``will``
    whether the will is published [MQTT-3.1.2-8, 3.1.2-10]."""

    reason: str
    code: int | None
    will: bool


@dataclass(frozen=True, slots=True)
class PublishWill(Action):
    """The connection closed and its will goes out: at once, or after ``delay`` seconds unless the
    session is resumed first (MQTT 5's Will Delay Interval [MQTT-3.1.3-9]); see ``MqttSession.ended``."""

    will: Will
    delay: float


SAVE_SESSION = SaveSession()
