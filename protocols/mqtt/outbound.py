"""Deliveries to one MQTT client: the in-flight window, the backlog, the write buffer and billing.

Deliveries are written to a buffer flushed once per event-loop iteration;
QoS 1/2 deliveries occupy the session's in-flight window and wait in a bounded
backlog beyond it; a client whose backlog overflows is a slow consumer and is
disconnected. The acknowledgements of the client's own publishes leave through
the same buffer, in the order the session releases them. Deliveries are
billed once per write batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.bus.session_consumer import SessionMessage
from gateway.payload import Delivery
from gateway.topics import Namespace
from protocols.mqtt.actions import Complete
from protocols.mqtt.close_causes import CloseCause
from protocols.mqtt.codec import encode, encode_publish
from protocols.mqtt.codec5 import encode5, encode_publish5
from protocols.mqtt.host import ConnectionHost
from protocols.mqtt.inbound import MAX_PENDING_ACKS
from protocols.mqtt.packets import (
    Packet,
)
from protocols.mqtt.subscriptions import OneCopy, Outgoing, Subscription, best_match, carrier
from protocols.mqtt.v5 import expired

log = logging.getLogger("flowgate.mqtt")


def _render_qos0(full: bool) -> Callable[[Delivery], bytes]:
    def render(delivery: Delivery) -> bytes:
        topic = delivery.namespace.full(delivery.topic) if full else delivery.topic
        return encode_publish(topic, delivery.payload.body)

    return render


_RENDER_SHORT = _render_qos0(False)
_RENDER_FULL = _render_qos0(True)
FRAME_SHORT, FRAME_FULL = "mqtt0", "mqtt0f"  # Delivery.frame names: a QoS 0 PUBLISH, short or full topic name


class Outbound(ConnectionHost):
    """Deliveries and acknowledgements to the client: window, backlog, write buffer, billing."""

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump_backlog()

    def deliver_live(self, subscription: Subscription, delivery: Delivery) -> None:
        """A message from the hub for one of this (clean) session's subscriptions."""
        if self._close_reason is not None:
            return
        if self._one is not None:  # some two of the filters overlap: one copy for them [MQTT-3.3.4-2]
            copy = self._one_copy(self._one, subscription, delivery)
            if copy is None:
                return  # sent already for another subscription, or wanted by none (No Local)
            subscription = copy
        qos = delivery.qos if delivery.qos < subscription.qos else subscription.qos
        if self.v5 is not None:
            if not self._v5.deliver(subscription, delivery, qos):
                return  # No Local, or too large for the client: not delivered, not billed
        elif qos == 0 and not self._write_paused and not self._backlog:
            frame = delivery.frame(
                FRAME_FULL if subscription.full else FRAME_SHORT, _RENDER_FULL if subscription.full else _RENDER_SHORT
            )
            self._write(frame)
        else:
            topic = delivery.namespace.full(delivery.topic) if subscription.full else delivery.topic
            item = Outgoing(topic, delivery.payload.body, qos)
            if self._backlog or self._write_paused:
                self._hold(item)  # behind the others (_queue_out's first case)
            elif (packet_id := self._window.put(qos, item)) is None:
                self._hold(item)  # the window is full
            else:  # _send_out's path, inlined for the common case of a window with room
                self._write(encode_publish(topic, item.body, qos, False, False, packet_id))
        self.count_delivery(delivery.namespace)

    def _one_copy(self, one: OneCopy, subscription: Subscription, delivery: Delivery) -> Subscription | None:
        """For overlapping filters: the subscription one copy of a live delivery goes out for (the highest
        QoS [MQTT-3.3.5-1]; for MQTT 5, a copy of it carrying every matching identifier [MQTT-3.3.4-4]); None
        if that copy went out already, goes out from the stored tier, or no subscription wants it (No Local
        [MQTT-3.8.3-3]).

        The hub hands one ``Delivery`` object to all the sinks of the bus subject that carried it, in one
        synchronous loop (``Hub.published``, ``Hub._fan_out``): the copy is for the subscriptions on that
        subject (the same ``carrier``), and the others among them are handed the same object next and skip
        it. Every message is stored, so when a stored-tier (QoS 2) subscription matches too, a core-tier
        delivery waits for the stored tier's, whose copy is for the core-tier subscriptions as well.
        Subscriptions on different subjects of one tier ('a/+' and 'a/#': 'a.*' and 'a.>') get a message
        as different objects (from another replica, or a stored one: one per bus subscription), so each
        gets its own copy, with its own identifiers [MQTT-3.3.4-5]; a message published here is one object
        for every core-tier entry, and is sent the same way, so what a client receives does not depend on
        where the message was published.
        """
        covered = one.covered
        if delivery is not one.delivery:
            one.delivery = delivery
            covered = one.covered = set()
        elif subscription.topic_filter in covered:
            return None
        claims = self.claims
        assert claims is not None
        rule = claims.permissions.subscribe
        topic, core, subs = delivery.topic, subscription.core, self._subs.values()
        # (with its sinks on: one moving onto the stored tier keeps its core-tier copies until then [MQTT-3.8.4-3])
        stored = [
            carrier(s.topic_filter, topic) for s in subs if not s.core and s.sinks and s.interest.wants(topic, rule)
        ]
        if core and stored:
            covered.update(s.topic_filter for s in subs)  # the stored tier brings it (below)
            return None
        key = carrier(subscription.topic_filter, topic)
        group = [s for s in subs if s.core == core and carrier(s.topic_filter, topic) == key]
        covered.update(s.topic_filter for s in group)
        if not core and stored and key == min(stored):  # one stored-tier copy is for the core-tier ones too
            group += [s for s in subs if s.core and s.interest.wants(topic, rule)]
        if self.v5 is not None:
            group = [s for s in group if self._v5.wanted(s, delivery)]
        best = best_match(group, delivery, rule)
        if best is None or self.v5 is None:
            return best
        ids = self._v5.matching_ids(group, delivery)
        return best if ids == best.ids else replace(best, ids=ids)  # (to send, not kept: V5Hooks.deliver)

    def _on_session_message(self, message: SessionMessage) -> None:
        """A message from this persistent session's consumer."""
        consumer = self._consumer
        if consumer is None or self._close_reason is not None:
            return  # not acknowledged: redelivered to the next connection
        claims = self.claims
        assert claims is not None
        delivery = message.delivery
        sub = best_match(self._subs.values(), delivery, claims.permissions.subscribe)
        if sub is None or expired(delivery.payload.meta, time.time()):  # [MQTT-3.3.2-5], for 3.1.1 clients too
            consumer.ack(message.ack_subject)
            self._want_more()
            return
        if self.v5 is not None and not self._v5.wanted(sub, delivery):
            consumer.ack(message.ack_subject)
            self._want_more()
            return
        # QoS, DUP and the packet identifier the message had before, if it is sent again (MqttSession.redelivery)
        qos, dup, packet_id = self.session.redelivery(delivery.qos, sub.qos, delivery.seq, message.redelivered)
        if self.v5 is not None:
            item = self._v5.outgoing(sub, delivery, qos)
            item.sub_ids = self._v5.matching_ids(self._subs.values(), delivery)  # one copy: every id [MQTT-3.3.4-4]
        else:
            topic = delivery.namespace.full(delivery.topic) if sub.full else delivery.topic
            item = Outgoing(topic, delivery.payload.body, qos)
        item.dup, item.packet_id, item.ack_subject = dup, packet_id, message.ack_subject
        self._queue_out(item)
        self.count_delivery(delivery.namespace)
        self._want_more()

    def _want_more(self) -> None:
        if self._consumer is not None:
            self._consumer.want(self._window.free - len(self._backlog))
        if self._shared.members:
            self._shared.want(self._window.free - len(self._backlog))

    def _queue_out(self, item: Outgoing) -> None:
        if self._backlog or self._write_paused or not self._fits(item):
            self._hold(item)
            return
        self._send_out(item)

    def _hold(self, item: Outgoing) -> None:
        """``item`` waits in the backlog, behind the others; a client whose backlog is full is a slow consumer."""
        if len(self._backlog) >= self.ctx.config.outbound_limit:
            self.ctx.services.metrics.slow_consumers.labels("mqtt").inc()
            self.abort(CloseCause.SLOW_CONSUMER, f"slow consumer: {len(self._backlog)} messages waiting")
            return
        self._backlog.append(item)

    def _fits(self, item: Outgoing) -> bool:
        if item.qos == 0:
            return True
        if item.packet_id is not None:
            return self._window.can_use(item.packet_id)
        return self._window.free > 0

    def _send_out(self, item: Outgoing) -> None:
        if self.v5 is not None:
            self._v5.send_out(item)
            return
        if item.qos == 0:
            self._write(encode_publish(item.topic, item.body, 0, item.retain))
            consumer = item.consumer or self._consumer
            if item.ack_subject is not None and consumer is not None:
                consumer.ack(item.ack_subject)
            return
        packet_id = item.packet_id if item.packet_id is not None else self._window.allocate()
        assert packet_id is not None
        self._window.add(packet_id, item.qos, item)
        self._write(encode_publish(item.topic, item.body, item.qos, item.retain, item.dup, packet_id))

    def _pump_backlog(self) -> None:
        backlog = self._backlog
        window = self._window
        room = window.free  # kept up to date below: a QoS 1/2 item goes out only while the window has room
        v5 = self.v5
        # MQTT 5 without topic aliases or a size limit: a message without properties goes out as 3.1.1's does
        plain5 = v5 is not None and not v5.aliases.maximum and v5.maximum_packet_size is None
        while backlog and not self._write_paused and self._close_reason is None:
            item = backlog[0]
            qos = item.qos
            if qos and room <= 0:
                break  # (as _fits says for any QoS 1/2 item)
            if (
                qos
                and item.packet_id is None
                and (v5 is None or (plain5 and not item.sub_ids and (item.meta is None or item.meta.bare)))
            ):
                # _fits and _send_out (V5Hooks.send_out) inlined for the commonest item, a live QoS 1/2
                # delivery (every PUBACK pumps one): a place in the window, then the PUBLISH
                packet_id = window.put(qos, item)
                if packet_id is None:
                    break
                room -= 1
                backlog.popleft()
                encode = encode_publish if v5 is None else encode_publish5
                self._write(encode(item.topic, item.body, qos, item.retain, item.dup, packet_id))
                continue
            if not self._fits(item):
                break
            self._send_out(backlog.popleft())
            room = window.free
        if self._consumer is not None or self._shared.members:  # (a clean session has nothing to ask for more)
            self._want_more()

    def _complete(self, action: Complete) -> bool:
        """The client completed a QoS 1/2 delivery (PUBACK or PUBCOMP): acknowledge it upstream, send more."""
        item = action.item
        consumer = item.consumer or self._consumer
        if item.ack_subject is not None and consumer is not None:
            consumer.ack(item.ack_subject)
        self._pump_backlog()
        return True

    def count_delivery(self, namespace: Namespace) -> None:
        """Count one message handed to the client and bill it with its batch (``_bill``)."""
        self._delivered_count += 1
        if namespace is self._billing_namespace:
            self._unbilled += 1
        else:
            self._bill(namespace)

    def _bill(self, namespace: Namespace | None) -> None:
        """Bill the deliveries counted so far, then count for ``namespace`` (one bill per batch, not per message)."""
        if self._unbilled and self._billing_namespace is not None:
            self._guard.record_delivery(self._billing_namespace, self._unbilled)
        self._billing_namespace = namespace
        self._unbilled = 0 if namespace is None else 1

    def _send(self, packet: Packet) -> None:
        self._write(encode(packet) if self.v5 is None else encode5(packet))

    def _write(self, data: bytes) -> None:
        self._wbuf.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._delivered_count:
            self._delivered.inc(self._delivered_count)  # one metrics update per batch, not per message
            self._delivered_count = 0
        if self._unbilled:
            self._bill(None)
        if not self._wbuf:
            return
        data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
        self._wbuf.clear()
        if not self._peer_gone:
            self.wire.write(data)

    def _queue_ready(self, packet: bytes) -> None:
        """Send an acknowledgement that waits for no store, after every earlier one [MQTT-4.6.0-2]."""
        if self.session.after_acks(packet):
            self._write(packet)

    def _drain_acks(self) -> None:
        """The store answered a publish: the acknowledgements now due go out, in order."""
        acks = self._acks
        pending = len(acks)
        if not pending:
            return
        wbuf = self._wbuf
        result = self.session.drain_acks(wbuf)
        if wbuf and not self._flush_scheduled:  # (what _write schedules for anything else in wbuf)
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if result is not None:
            self._apply_soon(result)
        if len(acks) < MAX_PENDING_ACKS // 2 <= pending:
            # the reader waits (_settle) only from MAX_PENDING_ACKS on: woken as the queue falls below half of it
            self._acks_drained.set()
