"""One MQTT shared subscription group's durable pull consumer (``$share/<group>/<filter>``).

Every member of a group, on every replica, pulls from the same durable
consumer, so JetStream hands each message to one member. A member acknowledges
a message once its client completed it; a member that leaves gives back
(``-NAK``) what its client did not acknowledge, so another member gets it at
once; a member that vanishes (a crash) lets the ack wait expire. The consumer
starts with the messages published after the group was first created and
outlives its members for ``expiry`` seconds.
"""

from __future__ import annotations

import hashlib
import logging

from nats.js import api

from gateway.bus.session_consumer import MAX_ACK_PENDING, SessionConsumer
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError

log = logging.getLogger("flowgate.mqtt.store")

SHARED_ACK_WAIT = 30.0  # a member that vanished without a word: its messages go to another after this
SHARED_PULL_BATCH = 5  # messages one member asks for at a time: small, so a burst is spread over the members


def shared_consumer_name(namespace_prefix: str, group: str, topic_filter: str) -> str:
    """The durable name of a group: the same on every replica, whatever characters the group uses."""
    digest = hashlib.sha256(f"{namespace_prefix}\0{group}\0{topic_filter}".encode()).hexdigest()[:24]
    return f"fg_share_{digest}"


class SharedConsumer(SessionConsumer):
    async def open(self, *, window: int, expiry: float) -> None:
        """Join the group's consumer, creating it the first time (no reset: other members are using it)."""
        js = self._bus.js
        config = api.ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            filter_subject=self.subject,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=SHARED_ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            max_deliver=-1,
            inactive_threshold=expiry,
        )
        with nats_errors(f"create shared consumer {self.name}"):
            await js.add_consumer(self.stream, config=config)  # idempotent for the same configuration
        await self.start(window)

    def want(self, count: int) -> None:
        super().want(min(count, SHARED_PULL_BATCH))

    async def leave(self, unacknowledged: list[str]) -> None:
        """Stop pulling and give the messages the client did not acknowledge back to the group, at once."""
        await self.stop()
        nc = self._bus.nc
        try:
            with nats_errors("give back shared messages"):
                for subject in unacknowledged:
                    await nc.publish(subject, b"-NAK")
                await nc.flush(timeout=2)
        except FlowGateError as exc:
            log.warning("shared messages of %s not given back: %s (redelivered after the ack wait)", self.name, exc)
