"""Persistent SQS-style queues: the protocol-neutral engine and its parts.

``attributes`` (queue attributes and limits), ``catalog`` (queue records in KV),
``handles`` (signed receipt handles), ``deliveries`` (receive counts beyond
JetStream's), ``messages`` (what is sent and received), ``scheduler`` (delayed
sends), ``fifo`` (message groups and deduplication), ``moves`` (out of a
dead-letter queue); ``records`` (a caller's queues), ``sending`` and
``receiving`` (the message operations), ``engine`` (every operation, the one
object front-ends hold). JetStream itself is in ``gateway.bus.queues``.
"""

from gateway.queues.attributes import QueueAttributes, RedrivePolicy
from gateway.queues.engine import QueueCounts, QueueEngine, QueueInfo
from gateway.queues.messages import ReceivedMessage, SendEntry, Sent

__all__ = [
    "QueueAttributes",
    "QueueCounts",
    "QueueEngine",
    "QueueInfo",
    "ReceivedMessage",
    "RedrivePolicy",
    "SendEntry",
    "Sent",
]
