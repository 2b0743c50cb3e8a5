"""JetStream state of the MQTT front-end: retained messages, persistent sessions, takeover.

Modelled on nats-server's ``mqtt.go``: separate storage per concern.

- Retained messages: stream ``FG_MQTT_RETAINED`` on ``fg.ret.<user>.<app>.<levels>``
  keeping one message per subject; an empty retained payload purges the subject
  [MQTT-3.3.1-10, 3.3.1-11]. Reading the retained messages of a filter is an
  ephemeral ``last_per_subject`` consumer.
- Session state (clean session 0): KV bucket ``fg_mqtt_sessions`` holds the
  subscriptions; undelivered and unacknowledged messages live in one durable
  pull consumer per session on the namespace's messages (see ``SessionConsumer``).
  Any replica on the same NATS can resume a session.
- Takeover: a core NATS subject on which a replica announces that a client id
  connected, so every other replica closes its older connection [MQTT-3.1.4-2].
  The body is ``[session_key, owner]``; the header ``Fg-Resuming`` (``1`` or
  ``0``) says whether the new connection resumes the session, which decides a
  delayed will on the other replicas. A header, so that replicas from before
  it read the body as they always did; their announcements, without it, are
  reported with ``resuming=None``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js import api

from gateway.bus.core import MESSAGES_STREAM, Bus
from gateway.bus.kv import Bucket
from gateway.bus.session_consumer import OnSessionMessage, SessionConsumer, keep_for
from gateway.bus.translate import nats_errors
from gateway.errors import NotFound
from gateway.message_meta import PROPS_HEADER
from gateway.payload import QOS_HEADER, Payload
from gateway.topics import MESSAGE_SUBJECT_ROOT, Namespace, parse_subject

log = logging.getLogger("flowgate.mqtt.store")

RETAINED_STREAM = "FG_MQTT_RETAINED"
RETAINED_ROOT = "fg.ret"
SESSIONS_BUCKET = "fg_mqtt_sessions"
TAKEOVER_SUBJECT = "fg.ctl.mqtt.takeover"
RESUMING_HEADER = "Fg-Resuming"
RETAINED_FETCH_BATCH = 256


@dataclass(frozen=True, slots=True)
class RetainedMessage:
    topic: str
    payload: Payload
    qos: int


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """One subscription of a persistent session.

    ``since`` is the last message sequence stored before the subscription was
    made: only later messages match it. ``full`` records whether the client
    used full names, so deliveries use the same form.
    """

    topic_filter: str
    qos: int
    since: int
    full: bool
    options: int = 0  # MQTT 5 subscription options bits: 0x04 No Local, 0x08 Retain As Published
    ids: tuple[int, ...] = ()  # MQTT 5 subscription identifier


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a persistent session keeps besides its consumer's messages.

    ``pubrel``: identifiers of QoS 2 messages the client acknowledged with
    PUBREC and not yet with PUBCOMP (PUBREL is re-sent on resume [MQTT-4.4.0-1]);
    ``inbound``: identifiers of QoS 2 messages received from the client and not
    yet released (a re-sent PUBLISH is not stored twice [MQTT-4.3.3-2]);
    ``expires_at``: when the session ends (epoch seconds), written as its last
    connection closes (its Session Expiry Interval counts from then
    [MQTT-3.1.2-23]); ``None`` while a connection holds it. The durable
    consumer's inactive threshold removes it too, but only at nats-server's
    next check.
    """

    subscriptions: tuple[StoredSubscription, ...]
    pubrel: tuple[int, ...] = ()
    inbound: tuple[int, ...] = ()
    revision: int = 0
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "subs": [
                    [
                        s.topic_filter,
                        s.qos,
                        s.since,
                        s.full,
                        *([{"o": s.options, "i": s.ids}] if s.options or s.ids else []),
                    ]
                    for s in self.subscriptions
                ],
                "pubrel": list(self.pubrel),
                "inbound": list(self.inbound),
                **({} if self.expires_at is None else {"expires_at": self.expires_at}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, revision: int) -> SessionRecord:
        raw = orjson.loads(data)
        subs = tuple(_stored_subscription(entry) for entry in raw.get("subs", []))
        pubrel = tuple(int(i) for i in raw.get("pubrel", []))
        inbound = tuple(int(i) for i in raw.get("inbound", []))
        expires_at = raw.get("expires_at")
        return cls(subs, pubrel, inbound, revision, None if expires_at is None else float(expires_at))


def _stored_subscription(entry: list[Any]) -> StoredSubscription:
    topic_filter, qos, since, full, *more = entry
    extra = more[0] if more and isinstance(more[0], dict) else {}
    options, ids = int(extra.get("o", 0)), tuple(int(i) for i in extra.get("i", ()))
    return StoredSubscription(str(topic_filter), int(qos), int(since), bool(full), options, ids)


def session_names(namespace: Namespace, client_id: str) -> tuple[str, str]:
    """(KV key, durable consumer name) of a client id inside a namespace."""
    digest = hashlib.sha256(f"{namespace.user_id}\0{namespace.app}\0{client_id}".encode()).hexdigest()[:32]
    return f"{namespace.user_id}.{namespace.app}.{digest}", f"mqtt_{digest}"


def retained_subject(message_subject: str) -> str:
    return RETAINED_ROOT + message_subject[len(MESSAGE_SUBJECT_ROOT) :]


class MqttStore:
    """The MQTT front-end's handle on JetStream; one per process."""

    def __init__(self, bus: Bus, sessions: Bucket) -> None:
        self._bus = bus
        self._sessions = sessions
        self._takeover_listeners: list[Callable[[str, str, bool | None], None]] = []

    @classmethod
    async def open(cls, bus: Bus) -> MqttStore:
        settings = bus.settings
        await bus.ensure_stream(
            api.StreamConfig(
                name=RETAINED_STREAM,
                subjects=[f"{RETAINED_ROOT}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_msgs_per_subject=1,
                num_replicas=settings.replicas,
                discard=api.DiscardPolicy.OLD,
            )
        )
        store = cls(bus, await bus.bucket(SESSIONS_BUCKET))
        with nats_errors("subscribe to MQTT takeovers"):
            await bus.nc.subscribe(TAKEOVER_SUBJECT, cb=store._on_takeover)
        return store

    # -- takeover ------------------------------------------------------------------------

    def on_takeover(self, listener: Callable[[str, str, bool | None], None]) -> None:
        """``listener(session_key, owner, resuming)`` runs when any replica accepts a connection for that key;
        ``resuming`` is whether it resumes the session (``None``: the announcing replica did not say)."""
        self._takeover_listeners.append(listener)

    async def announce_takeover(self, session_key: str, owner: str, *, resuming: bool) -> None:
        headers = {RESUMING_HEADER: "1" if resuming else "0"}
        with nats_errors("announce MQTT takeover"):
            await self._bus.nc.publish(TAKEOVER_SUBJECT, orjson.dumps([session_key, owner]), headers=headers)

    async def _on_takeover(self, msg: Msg) -> None:
        try:
            key, owner = orjson.loads(msg.data)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return
        flag = (msg.headers or {}).get(RESUMING_HEADER)
        resuming = None if flag is None else flag == "1"
        for listener in self._takeover_listeners:
            listener(str(key), str(owner), resuming)

    # -- retained messages -----------------------------------------------------------------

    async def retain(self, namespace: Namespace, topic: str, payload: Payload, qos: int) -> None:
        """Make ``payload`` the retained message of ``topic``; an empty payload clears it [MQTT-3.3.1-10]."""
        subject = retained_subject(namespace.subject(topic))
        if not payload.body:
            with nats_errors("clear retained message"):
                await self._bus.js.purge_stream(RETAINED_STREAM, subject=subject)
            return
        headers = {QOS_HEADER: str(qos)}
        if payload.meta is not None:  # MQTT 5 properties kept with the retained message
            headers[PROPS_HEADER] = payload.meta.to_header()
        await self._bus.publish(subject, payload, headers=headers)

    async def retained(self, namespace: Namespace, topic_filter: str) -> list[RetainedMessage]:
        """The retained messages of every topic ``topic_filter`` matches (no ``$`` rule applied)."""
        found: list[RetainedMessage] = []
        for subject in namespace.filter_subjects(topic_filter):
            found.extend(await self._retained_on(retained_subject(subject)))
        return found

    async def _retained_on(self, subject: str) -> list[RetainedMessage]:
        js = self._bus.js
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        with nats_errors("read retained messages"):
            info = await js.add_consumer(RETAINED_STREAM, config=config)
            try:
                wanted = info.num_pending or 0
                if not wanted:
                    return []
                sub = await js.pull_subscribe_bind(consumer=info.name, stream=RETAINED_STREAM)
                messages: list[RetainedMessage] = []
                try:
                    while len(messages) < wanted:
                        batch = await sub.fetch(min(RETAINED_FETCH_BATCH, wanted - len(messages)), timeout=2)
                        for msg in batch:
                            messages.append(_retained_message(msg))
                finally:
                    await sub.unsubscribe()
                return messages
            finally:
                await self._forget_consumer(RETAINED_STREAM, str(info.name))

    async def _forget_consumer(self, stream: str, name: str) -> None:
        try:
            with nats_errors(f"delete consumer {name}"):
                await self._bus.js.delete_consumer(stream, name)
        except NotFound:
            pass

    # -- persistent sessions -------------------------------------------------------------

    async def load_session(self, key: str) -> SessionRecord | None:
        entry = await self._sessions.get(key)
        return None if entry is None else SessionRecord.from_bytes(entry.value, entry.revision)

    async def save_session(self, key: str, record: SessionRecord) -> None:
        await self._sessions.put(key, record.to_bytes())

    async def delete_session(self, key: str, consumer: str) -> None:
        """Discard a session: its record and its durable consumer [MQTT-3.1.2-6]."""
        await self._sessions.delete(key)
        await self._forget_consumer(MESSAGES_STREAM, consumer)

    async def keep_session(self, consumer: str, expiry: float) -> None:
        """A session's new expiry (MQTT 5 DISCONNECT): its durable consumer outlives the connection that long."""
        await keep_for(self._bus, MESSAGES_STREAM, consumer, expiry)

    async def consumer_exists(self, consumer: str) -> bool:
        try:
            with nats_errors("read session consumer"):
                await self._bus.js.consumer_info(MESSAGES_STREAM, consumer)
        except NotFound:
            return False
        return True

    async def last_seq(self) -> int:
        return (await self._bus.stream_bounds()).last_seq

    async def create_consumer(
        self, consumer: str, namespace: Namespace, on_message: OnSessionMessage, *, expiry: float
    ) -> SessionConsumer:
        """Create a session's durable consumer (or find it), ready to redeliver what was not acknowledged;
        nothing is pulled until its ``start``. A new one starts after the stream's last message."""
        session = SessionConsumer(self._bus, MESSAGES_STREAM, consumer, namespace.all_subjects, on_message)
        await session.create(expiry=expiry, fresh_start=await self.last_seq() + 1)
        return session


def _retained_message(msg: Msg) -> RetainedMessage:
    _, topic = parse_subject(MESSAGE_SUBJECT_ROOT + msg.subject[len(RETAINED_ROOT) :])
    headers = msg.headers or {}
    raw_qos = headers.get(QOS_HEADER, "0")
    return RetainedMessage(topic, Payload.from_headers(msg.data, headers), int(raw_qos) if raw_qos in "012" else 0)


__all__ = [
    "MqttStore",
    "RetainedMessage",
    "SessionRecord",
    "StoredSubscription",
    "retained_subject",
    "session_names",
]
