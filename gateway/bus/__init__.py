"""The message bus: the one place that talks to NATS through nats-py.

Everything else sees only the gateway's own types and errors: ``Bus`` for
connection, streams and publishing, ``Bucket`` for KV, ``LiveSubscription`` for
ordered delivery from a stream sequence, ``CoreSubscription`` for
what others publish, as NATS routes it.
"""

from gateway.bus.acks import PubAck, Settle, settle
from gateway.bus.core import Bus, BusState, Outlet, StreamBounds
from gateway.bus.kv import Bucket, Entry
from gateway.bus.subscriptions import CoreSubscription, LiveSubscription

__all__ = [
    "Bucket",
    "Bus",
    "BusState",
    "CoreSubscription",
    "Entry",
    "LiveSubscription",
    "Outlet",
    "PubAck",
    "Settle",
    "StreamBounds",
    "settle",
]
