"""The names and types the queue modules of ``gateway.bus`` share (``queues``, ``pulls``, ``queue_acks``).

Each queue is a work-queue stream ``FGQ_<id>`` on subject ``fg.q.<id>`` with one
durable pull consumer ``worker``; delayed sends wait in the shared stream
``FG_QUEUE_DELAYED`` (subject ``fg.qd.<id>``). A delivered message is
acknowledged through its JetStream ack subject, rebuilt from a ``DeliveryRef``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from gateway.bus.core import Bus
from gateway.errors import Unavailable

QUEUE_SUBJECT_ROOT = "fg.q"
DELAYED_STREAM = "FG_QUEUE_DELAYED"
DELAYED_SUBJECT_ROOT = "fg.qd"
CONSUMER = "worker"
REQUEST_TIMEOUT = 5.0


def queue_stream(queue_id: str) -> str:
    return f"FGQ_{queue_id}"


def queue_subject(queue_id: str) -> str:
    return f"{QUEUE_SUBJECT_ROOT}.{queue_id}"


def delayed_subject(queue_id: str) -> str:
    return f"{DELAYED_SUBJECT_ROOT}.{queue_id}"


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """What is needed to acknowledge one delivery later, from any replica."""

    stream_seq: int
    delivery_seq: int
    delivered: int  # JetStream's delivery count, including redeliveries after naks
    timestamp_ns: int  # when the message was stored


@dataclass(frozen=True, slots=True)
class Pulled:
    """One message handed out by a pull."""

    subject: str
    ref: DeliveryRef
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class WorkStats:
    stored: int  # messages in the stream
    undelivered: int  # never handed out
    unacknowledged: int  # handed out, not acknowledged yet


OnOrphan = Callable[[str, Pulled], None]  # (stream, message) taken from the server but never handed out


def parse_ack_subject(reply: str) -> tuple[str, DeliveryRef]:
    """The stream and delivery of a JetStream ack subject (``$JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>``)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        offset = 2
    elif len(tokens) >= 11:  # newer servers add domain and account hash
        offset = 4
    else:
        raise ValueError(f"not an ack subject: {reply!r}")
    stream = tokens[offset]
    dc, sseq, dseq, ts = (int(t) for t in tokens[offset + 2 : offset + 6])
    return stream, DeliveryRef(sseq, dseq, dc, ts)


def live_client(bus: Bus) -> Client:
    """The bus's NATS connection, or ``Unavailable`` at once while NATS is away."""
    if not bus.connected:
        raise Unavailable("message bus unavailable; retry shortly")
    return bus.nc
