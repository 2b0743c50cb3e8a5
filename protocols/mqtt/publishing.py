"""A client's PUBLISH, sent to the store: at once when the gateway can take it, else awaited by the reader.

Publishing is pipelined: a PUBLISH is sent to JetStream and the next packet is
read at once; the session lets acknowledgements (PUBACK, PUBREC) go out in
order, each only after JetStream stored its message. QoS 0 is fire-and-track
(``session.TRACK_EVERY``). Refusals follow ``errors.py``: a publish refused for
the quota closes the connection (no PUBACK, so the client re-sends after a
top-up); a rate-limited publish pauses reading for ``retry_after`` and is retried.
"""

from __future__ import annotations

import logging

from gateway.errors import FlowGateError
from gateway.payload import Payload
from gateway.publishing import AdmitLater
from protocols.mqtt.actions import (
    Store,
)
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.errors import PublishReaction, publish_reaction, reject_reason, retry_after
from protocols.mqtt.flow import PendingAck, publish_ack
from protocols.mqtt.host import ConnectionHost
from protocols.mqtt.outbound import FRAME_FULL, FRAME_SHORT
from protocols.mqtt.packets import (
    Publish,
)
from protocols.mqtt.properties import NO_PROPERTIES
from protocols.mqtt.v5_connection import FRAME5_FULL, FRAME5_SHORT

log = logging.getLogger("flowgate.mqtt")

OUTLET_CACHE = 256  # topic names whose outlets a connection keeps, per QoS


class Publishing(ConnectionHost):
    """A client's PUBLISH (the session's ``Store`` action) to the store."""

    def _store_now(self, action: Store) -> bool:
        """The hot path of a QoS 0/1 PUBLISH: sent without awaiting anything, or False for the reader (``_store``).

        The outlet (topic permission checked, subject and headers encoded) of
        each name is kept per connection and QoS; the billing guard decides from
        memory or defers.
        """
        packet = action.publish
        qos = packet.qos
        if qos == 2 or packet.retain or packet.properties is not NO_PROPERTIES or action.refusal is not None:
            return False
        outlets = self._outlets[qos]
        outlet = outlets.get(packet.topic)
        if outlet is None:
            claims = self.claims
            assert claims is not None
            try:
                outlet = self.ctx.services.publisher.outlet(
                    claims, packet.topic, protocol="mqtt", headers=self._v5.headers(qos, None)
                )
            except FlowGateError:
                return False  # refused: _on_publish reports it
            if len(outlets) >= OUTLET_CACHE:
                outlets.clear()
            outlets[packet.topic] = outlet
        session = self.session
        pending = session.pending(packet)
        raw = packet.raw
        # A QoS 0 PUBLISH is what a QoS 0 subscriber of the same protocol version who spells the topic the same
        # way gets: forwarded as is (the decoders keep ``raw`` of a short PUBLISH; MQTT 5's only without properties).
        frames = None
        if raw is not None and not qos:
            short = packet.topic == outlet.topic
            if self.v5 is None:
                frames = {FRAME_SHORT if short else FRAME_FULL: raw}
            else:
                frames = {FRAME5_SHORT if short else FRAME5_FULL: raw}
        try:
            payload = Payload(packet.payload, None, self._bare_meta)  # (V5Hooks.payload, inlined)
            overfull = self.ctx.services.publisher.publish_now(outlet, payload, pending, frames=frames)
        except AdmitLater:
            return False
        except FlowGateError as exc:
            action.refusal = exc  # _store reacts (it may wait, so not here)
            return False
        result = session.published(packet, pending)  # (as _published, inlined on the hot path)
        if result is not None:
            self._apply_soon(result)
        if pending is not None and pending.settled:
            self._drain_acks()
        self._overfull = overfull
        return True

    async def _store(self, action: Store) -> None:
        refusal, action.refusal = action.refusal, None
        if refusal is None or not await self._refused(action.publish, refusal):  # False: try it again
            await self._on_publish(action.publish)

    async def _on_publish(self, packet: Publish) -> None:
        qos = packet.qos
        claims = self.claims
        assert claims is not None
        services = self.ctx.services
        meta = self._v5.meta(packet)
        payload = self._v5.payload(packet, meta)
        headers = self._v5.headers(qos, meta)
        while True:
            try:
                if packet.retain:
                    topic = services.publisher.resolve(claims, packet.topic)
                    await self.ctx.store.retain(claims.namespace, topic, payload, qos)
                pending = self.session.pending(packet)
                await services.publisher.publish_then(
                    claims, packet.topic, payload, pending, protocol="mqtt", headers=headers
                )
            except FlowGateError as exc:
                if await self._refused(packet, exc):
                    return
                continue
            break
        self._published(packet, pending)
        await self._settle()

    async def _refused(self, packet: Publish, exc: FlowGateError) -> bool:
        """React to a publish the gateway refused: True when done with it, False to try it again."""
        if self.v5 is not None and self._v5.refused_publish(packet, exc):
            return True
        reaction = publish_reaction(exc)
        if reaction is PublishReaction.RETRY_LATER:
            await self._throttle(retry_after(exc))
            return False
        if reaction is PublishReaction.DROP_AND_ACK:
            self.ctx.services.metrics.rejected.labels("mqtt", reject_reason(exc)).inc()
            log.warning("mqtt %s: publish to %r dropped: %s", self.id, packet.topic, exc.message)
            ack = publish_ack(packet.qos, packet.packet_id or 0)
            if ack is not None:
                self._queue_ready(ack)
            return True
        self._fail(CloseCause.PUBLISH_FAILED, f"publish to {packet.topic!r} failed: {exc.code}: {exc.message}")

    def _published(self, packet: Publish, pending: PendingAck | None) -> None:
        """A PUBLISH went to JetStream (the session counts it; its acknowledgement follows the store's)."""
        result = self.session.published(packet, pending)
        if result is not None:
            self._apply_soon(result)
        if pending is not None and pending.settled:
            self._drain_acks()
