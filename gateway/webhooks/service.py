"""The webhooks service: the API's operations, and the dispatchers this replica runs.

A webhook is a record in KV and a durable consumer on the message stream,
created together (so messages from that moment on are kept for it whatever
happens to the gateways). Every replica runs a dispatcher for every active
webhook; a sync loop reads the records every ``FLOWGATE_WEBHOOK_SYNC_INTERVAL``
seconds to start, update, pause and stop them, so a webhook created, changed or
deleted on one replica reaches the others within that interval.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from gateway.billing import BillingGuard
from gateway.bus import Bucket, Bus
from gateway.bus.durable import DurableConsumer
from gateway.errors import BadRequest, Conflict, FlowGateError, Forbidden, NotFound
from gateway.metrics import Metrics
from gateway.principal import Principal
from gateway.queues import QueueEngine
from gateway.settings import Settings
from gateway.topics import leads_with_wildcard
from gateway.webhooks.deliverylog import DeliveryLog
from gateway.webhooks.dispatcher import Context, Dispatcher
from gateway.webhooks.leases import Leases
from gateway.webhooks.metrics import WebhookMetrics
from gateway.webhooks.records import BUCKET, MAX_BATCH_WAIT_MS, Webhook
from gateway.webhooks.targets import check_target

log = logging.getLogger("flowgate.webhooks")

MAX_WEBHOOKS_PER_APP = 100


class Webhooks:
    def __init__(self, settings: Settings, bus: Bus, records: Bucket, context: Context) -> None:
        self._settings = settings
        self._bus = bus
        self._records = records
        self._context = context
        self._running: dict[str, Dispatcher] = {}
        self._sync_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, settings: Settings, bus: Bus, metrics: Metrics, guard: BillingGuard | None, queues: QueueEngine
    ) -> Webhooks:
        records = await bus.bucket(BUCKET)
        delivery_log = await DeliveryLog.open(bus)
        leases = await Leases.open(bus, ttl=_ack_wait(settings) + 1.0)
        replica = secrets.token_hex(4)
        context = Context(settings, delivery_log, WebhookMetrics(metrics.registry), guard, queues, replica, leases)
        return cls(settings, bus, records, context)

    def start(self) -> None:
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop(), name="webhook sync")
        self._context.log.start()

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        running, self._running = self._running, {}
        await asyncio.gather(*(d.stop() for d in running.values()), return_exceptions=True)
        await self._context.log.close()

    # -- the API ----------------------------------------------------------------------------

    async def create(self, claims: Principal, document: Any) -> Webhook:
        webhook = Webhook.new(claims.namespace, document)
        self._check_filter(claims, webhook.filter)
        await check_target(webhook.url, allow_private=self._settings.webhook_allow_private)
        if len(await self.list_all(claims)) >= MAX_WEBHOOKS_PER_APP:
            raise Forbidden(f"an app has at most {MAX_WEBHOOKS_PER_APP} webhooks")
        await self._consumer(webhook)
        await self._records.create(webhook.id, webhook.encode())
        await self._apply(webhook)
        log.info("webhook %s created for %s on %r", webhook.id, claims.namespace.prefix, webhook.filter)
        return webhook

    async def get(self, claims: Principal, webhook_id: str) -> Webhook:
        entry = await self._records.get(webhook_id) if _valid_id(webhook_id) else None
        webhook = Webhook.decode(entry.value) if entry is not None else None
        if webhook is None or webhook.namespace != claims.namespace:
            raise NotFound(f"no webhook {webhook_id!r}")
        return webhook

    async def list_all(self, claims: Principal) -> list[Webhook]:
        out = []
        for key in await self._records.keys():
            entry = await self._records.get(key)
            if entry is not None:
                webhook = Webhook.decode(entry.value)
                if webhook.namespace == claims.namespace:
                    out.append(webhook)
        return sorted(out, key=lambda w: (w.created_at, w.id))

    async def update(self, claims: Principal, webhook_id: str, document: Any) -> Webhook:
        for _ in range(5):
            entry = await self._records.get(webhook_id) if _valid_id(webhook_id) else None
            current = Webhook.decode(entry.value) if entry is not None else None
            if entry is None or current is None or current.namespace != claims.namespace:
                raise NotFound(f"no webhook {webhook_id!r}")
            if isinstance(document, dict) and "filter" in document and document["filter"] != current.filter:
                raise BadRequest("a webhook's filter cannot change: create another webhook")
            changed = current.changed(claims.namespace, document)
            if changed.url != current.url:
                await check_target(changed.url, allow_private=self._settings.webhook_allow_private)
            try:
                await self._records.update(webhook_id, changed.encode(), entry.revision)
            except FlowGateError as exc:
                if exc.status == 409:
                    continue
                raise
            await self._apply(changed)
            return changed
        raise Conflict("the webhook keeps changing concurrently; retry")

    async def delete(self, claims: Principal, webhook_id: str) -> None:
        webhook = await self.get(claims, webhook_id)
        await self._records.delete(webhook.id)
        await self._stop(webhook.id)
        await DurableConsumer.delete(self._bus, webhook.consumer)
        await self._context.log.forget(webhook.id)

    async def deliveries(self, claims: Principal, webhook_id: str) -> list[dict[str, object]]:
        """The most recent delivery attempts, newest first."""
        webhook = await self.get(claims, webhook_id)
        return await self._context.log.recent(webhook.id)

    @staticmethod
    def _check_filter(claims: Principal, topic_filter: str) -> None:
        if not claims.permissions.subscribe.permits_filter(topic_filter):
            raise Forbidden(f"this token may not subscribe to {topic_filter!r}")

    # -- dispatchers ------------------------------------------------------------------------

    def _ack_wait(self) -> float:
        return _ack_wait(self._settings)

    @staticmethod
    def _subject(webhook: Webhook) -> tuple[str, bool]:
        """The consumer's one subject, and whether it matches exactly the filter (else filtered here).

        ``a/b/#`` needs two subjects (``a.b`` and ``a.b.>``), which one consumer on
        nats-server 2.9 cannot have: the consumer takes their parent's ``a.>`` and
        the dispatcher acknowledges what the filter does not match.
        """
        subjects = webhook.namespace.filter_subjects(webhook.filter)
        if len(subjects) == 1:
            return subjects[0], not leads_with_wildcard(webhook.filter)
        return subjects[0].rsplit(".", 1)[0] + ".>", False

    async def _consumer(self, webhook: Webhook) -> DurableConsumer:
        subject, _ = self._subject(webhook)
        pending = webhook.batch.max_messages if webhook.batch is not None else 1
        return await DurableConsumer.open(
            self._bus, webhook.consumer, subject, ack_wait=self._ack_wait(), max_ack_pending=pending
        )

    async def _apply(self, webhook: Webhook) -> None:
        """Make this replica's dispatcher match ``webhook``'s record."""
        async with self._lock:
            running = self._running.get(webhook.id)
            if webhook.paused:
                if running is not None:
                    del self._running[webhook.id]
                    await running.stop()
                return
            if running is not None:
                running.webhook = webhook
                return
            consumer = await self._consumer(webhook)
            dispatcher = Dispatcher(webhook, consumer, self._context, exact=self._subject(webhook)[1])
            self._running[webhook.id] = dispatcher
            dispatcher.start()

    async def _stop(self, webhook_id: str) -> None:
        async with self._lock:
            running = self._running.pop(webhook_id, None)
        if running is not None:
            await running.stop()

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except FlowGateError as exc:
                log.warning("webhook sync: %s", exc.message)
            await asyncio.sleep(self._settings.webhook_sync_interval)

    async def sync(self) -> None:
        """Start, change and stop this replica's dispatchers to match the records."""
        seen: set[str] = set()
        for key in await self._records.keys():
            entry = await self._records.get(key)
            if entry is None:
                continue
            webhook = Webhook.decode(entry.value)
            seen.add(webhook.id)
            running = self._running.get(webhook.id)
            if running is None or running.webhook != webhook:
                await self._apply(webhook)
        for webhook_id in set(self._running) - seen:
            await self._stop(webhook_id)


def _ack_wait(settings: Settings) -> float:
    """How long one replica may hold a message: the longest wait for a batch to fill, an attempt's timeout
    and a margin. Longer, and a crashed replica's messages wait longer; shorter, and a slow answer
    would see its message delivered again by another replica."""
    return MAX_BATCH_WAIT_MS / 1000 + settings.webhook_timeout_seconds + 2.0


def _valid_id(webhook_id: str) -> bool:
    return webhook_id.startswith("wh_") and len(webhook_id) <= 40 and webhook_id[3:].isalnum()
