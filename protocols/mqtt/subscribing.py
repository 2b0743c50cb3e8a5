"""SUBSCRIBE and UNSUBSCRIBE of one MQTT connection, and the persistent session's stored record.

A clean session's subscriptions feed the connection through hub sinks (the
core tier up to QoS 1, the stored one for QoS 2); a persistent session's are
matched against its consumer's messages and saved with the session's QoS 2
state (``SessionRecord``), coalesced, one write at a time.
"""

from __future__ import annotations

import logging
import time

from gateway.bus.mqtt_store import SessionRecord, StoredSubscription
from gateway.errors import FlowGateError, Forbidden
from gateway.topics import filters_overlap
from protocols.mqtt.actions import (
    AddSubscriptions,
    Release,
    RemoveSubscriptions,
)
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.flow import delivery_qos
from protocols.mqtt.host import ConnectionHost
from protocols.mqtt.packets import (
    SUBACK_FAILURE,
    SubAck,
    UnsubAck,
)
from protocols.mqtt.properties import ReasonCode
from protocols.mqtt.shared import SHARE_PREFIX, parse_shared
from protocols.mqtt.subscriptions import HubSink, OneCopy, Outgoing, Subscription
from protocols.mqtt.v5 import expired

log = logging.getLogger("flowgate.mqtt")

MAX_SUBSCRIPTIONS = 256  # per connection; more get SUBACK 0x80
CORE_TIER_MAX_QOS = 1  # clean-session subscriptions up to this QoS use the hub's core tier, QoS 2 the stored one


class Subscribing(ConnectionHost):
    """The session's ``AddSubscriptions``, ``RemoveSubscriptions`` and ``Release``; the stored session record."""

    async def _on_subscribe(self, action: AddSubscriptions) -> None:
        packet = action.subscribe
        claims = self.claims
        assert claims is not None
        namespace = claims.namespace
        rule = claims.permissions.subscribe
        codes: list[int] = []
        added: list[Subscription] = []
        retained_for: list[Subscription] = []
        for index, (name, requested) in enumerate(packet.topics):
            if name.startswith(SHARE_PREFIX):  # one member of a group gets each message (shared.py)
                if packet.options and packet.options[index] & 0x04:
                    self._fail(
                        CloseCause.PROTOCOL_ERROR, "protocol error: No Local on a shared subscription [MQTT-3.8.3-4]"
                    )
                try:
                    group, _ = parse_shared(name) or ("", "")
                    ids = packet.properties.subscription_identifiers
                    codes.append(await self._shared.subscribe(name, group, requested, ids))
                except FlowGateError as exc:
                    log.info("mqtt %s: shared subscription %r refused: %s", self.id, name, exc.message)
                    codes.append(SUBACK_FAILURE if self.v5 is None else self._v5.suback_reason(exc))
                continue
            try:
                topic_filter = namespace.filter(name)
                if not rule.permits_filter(topic_filter):
                    raise Forbidden(f"may not subscribe to {topic_filter!r}")
                if topic_filter not in self._subs and len(self._subs) >= MAX_SUBSCRIPTIONS:
                    raise Forbidden(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
                full = name.startswith(namespace.prefix) and len(name) > len(namespace.prefix)
                granted = min(requested, 2)
                existed = topic_filter in self._subs
                sub = await self._add_subscription(topic_filter, granted, full)
            except FlowGateError as exc:
                # Refused filters get 0x80, the others are granted [MQTT-3.9.3-1, 3.8.4-5].
                log.info("mqtt %s: subscription to %r refused: %s", self.id, name, exc.message)
                if self.events is not None and exc.status == 403:
                    self.events.auth_failure(exc.message)
                codes.append(SUBACK_FAILURE if self.v5 is None else self._v5.suback_reason(exc))
                continue
            codes.append(granted)
            added.append(sub)
            if self.v5 is None or self._v5.subscribed(sub, packet, index, existed):
                retained_for.append(sub)
        if self._one is None and any(self._overlaps(sub.topic_filter) for sub in added):
            self._one = OneCopy()
        if self.events is not None:
            self.events.subscribed([sub.topic_filter for sub in added])
        if self.session.persistent and added:
            await self._save_session()
        self._send(SubAck(packet.packet_id, tuple(codes)))  # [MQTT-3.8.4-1, 3.8.4-2]
        for sub in retained_for:
            await self._send_retained(sub)

    async def _add_subscription(self, topic_filter: str, qos: int, full: bool) -> Subscription:
        """Add or replace a subscription; a replaced one keeps flowing without a gap [MQTT-3.8.4-3]."""
        assert self.claims is not None
        existing = self._subs.get(topic_filter)
        if self.session.persistent:
            since = existing.since if existing is not None else await self.ctx.store.last_seq()
            sub = Subscription(topic_filter, qos, full, since)
            self._subs[topic_filter] = sub
            self._want_more()
            return sub
        core = qos <= CORE_TIER_MAX_QOS
        if qos and core:
            self._bus_bound = True  # before any delivery on the core tier at QoS 1 (bus_interrupted)
        if existing is not None:
            old_qos, existing.qos, existing.full = existing.qos, qos, full
            if core != existing.core:
                # Onto the other hub tier: the new sinks first, so the flow is not interrupted [MQTT-3.8.4-3]
                # (a message may come twice while both are on).
                old_sinks, old_tier = existing.sinks, existing.core
                existing.sinks = []
                try:
                    await self._attach(existing, core=core)
                except FlowGateError:
                    existing.sinks, existing.core, existing.qos = old_sinks, old_tier, old_qos
                    raise
                await self._detach(old_sinks, core=old_tier)
            return existing
        sub = Subscription(topic_filter, qos, full)
        await self._attach(sub, core=core)
        self._subs[topic_filter] = sub
        return sub

    def _overlaps(self, topic_filter: str) -> bool:
        """Whether some other subscription's filter matches a topic ``topic_filter`` matches too."""
        return any(other != topic_filter and filters_overlap(other, topic_filter) for other in self._subs)

    async def _attach(self, sub: Subscription, *, core: bool) -> None:
        """Give a clean session's subscription its hub sinks, on the core tier for QoS 0 and 1 (hub.py)."""
        assert self.claims is not None
        sink = HubSink(self, sub, self.claims.permissions.subscribe)
        hub = self.ctx.services.hub
        sub.core = core
        try:
            for subject in self.claims.namespace.filter_subjects(sub.topic_filter):
                await hub.add(subject, sink, core=core)
                sub.sinks.append((subject, sink))
        except FlowGateError:
            await self._remove_sinks(sub)
            raise

    async def _remove_sinks(self, sub: Subscription) -> None:
        sinks, sub.sinks = sub.sinks, []
        await self._detach(sinks, core=sub.core)

    async def _detach(self, sinks: list[tuple[str, HubSink]], *, core: bool) -> None:
        for subject, sink in sinks:
            await self.ctx.services.hub.remove(subject, sink, core=core)

    async def _send_retained(self, sub: Subscription) -> None:
        """Retained messages matching a new subscription, flagged RETAIN [MQTT-3.3.1-6, 3.3.1-8]."""
        claims = self.claims
        assert claims is not None
        try:
            retained = await self.ctx.store.retained(claims.namespace, sub.topic_filter)
        except FlowGateError as exc:
            log.warning("mqtt %s: retained messages for %r unavailable: %s", self.id, sub.topic_filter, exc.message)
            return
        rule = claims.permissions.subscribe
        for message in retained:
            if not sub.interest.wants(message.topic, rule):
                continue  # e.g. '$' topics for wildcard filters [MQTT-4.7.2-1]
            if expired(message.payload.meta, time.time()):
                continue  # [MQTT-3.3.2-5]
            topic = claims.namespace.full(message.topic) if sub.full else message.topic
            qos = delivery_qos(message.qos, sub.qos)
            meta = message.payload.meta
            self._queue_out(Outgoing(topic, message.payload.body, qos, True, meta=meta, sub_ids=sub.ids))
            self._delivered_count += 1

    async def _on_unsubscribe(self, action: RemoveSubscriptions) -> None:
        packet = action.unsubscribe
        claims = self.claims
        assert claims is not None
        changed = False
        codes: list[int] = []  # MQTT 5 [3.11.3]
        for name in packet.topics:
            if name.startswith(SHARE_PREFIX):
                left = await self._shared.unsubscribe(name)
                codes.append(ReasonCode.SUCCESS if left else ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            try:
                topic_filter = claims.namespace.filter(name)
            except FlowGateError:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            sub = self._subs.pop(topic_filter, None)
            codes.append(ReasonCode.SUCCESS if sub is not None else ReasonCode.NO_SUBSCRIPTION_EXISTED)
            if sub is not None:
                changed = True
                await self._remove_sinks(sub)
                if self.events is not None:
                    self.events.unsubscribed([topic_filter])
        if changed and self._one is not None and not any(self._overlaps(f) for f in self._subs):
            self._one = None
        if changed and self.session.persistent:
            await self._save_session()
        # Even when nothing matched [MQTT-3.10.4-4, 3.10.4-5]; MQTT 5: one reason code per filter [MQTT-3.11.3-1].
        self._send(UnsubAck(packet.packet_id, tuple(codes) if self.v5 is not None else ()))

    async def _save_on_close(self) -> None:
        """The connection closes: what changed is saved, and a session it leaves behind (not ended now, not
        taken over) expires its interval from now [MQTT-3.1.2-23]."""
        if self._saver is not None and not self._saver.done():
            await self._saver
        left = (
            self.session.persistent
            and not self.session.expire_now
            and self._disconnect_code != ReasonCode.SESSION_TAKEN_OVER
        )
        if (self._dirty or left) and self.claims is not None:
            try:
                await self._save_session(time.time() + self._v5.session_expiry() if left else None)
            except FlowGateError as exc:
                log.warning("mqtt %s: session state not saved: %s", self.id, exc.message)

    async def _save_session(self, expires_at: float | None = None) -> None:
        """Write the session's record; ``expires_at``: its connection closes, it ends then (epoch seconds)."""
        assert self.session_key is not None
        self._dirty = False
        record = SessionRecord(
            tuple(
                StoredSubscription(s.topic_filter, s.qos, s.since, s.full, *self._v5.stored_options(s))
                for s in self._subs.values()
            ),
            tuple(sorted(self.session.pubrel)),
            self.session.inbound.snapshot(),
            expires_at=expires_at,
        )
        await self.ctx.store.save_session(self.session_key, record)

    def _mark_dirty(self) -> None:
        """Session state changed in a way worth saving soon (coalesced, one write at a time)."""
        if not self.session.persistent:
            return
        self._dirty = True
        if self._saver is None or self._saver.done():
            self._saver = self._loop.create_task(self._save_soon())

    async def _save_soon(self) -> None:
        while self._dirty and self.claims is not None:
            try:
                await self._save_session()
            except FlowGateError as exc:
                log.warning("mqtt %s: session state not saved: %s", self.id, exc.message)
                return

    async def _on_release(self, action: Release) -> None:
        """A persistent session's QoS 2 message reached the client: save the PUBREL state, then release the message.

        The identifier is saved before the message is acknowledged in JetStream,
        so a crash in between re-sends the PUBLISH (same id, DUP: ``MqttSession.redelivery``)
        rather than losing the PUBREL.
        """
        item = action.item
        if self._consumer is None or item.ack_subject is None:
            return
        try:
            await self._save_session()
        except FlowGateError as exc:
            log.warning("mqtt %s: PUBREL state not saved: %s", self.id, exc.message)
            return  # the message stays unacknowledged: redelivered as PUBLISH after a reconnect
        self._consumer.ack(item.ack_subject)
        item.ack_subject = None
