"""One webhook's delivery loop in one replica: fetch, POST, acknowledge or retry later.

Every replica runs a ``Dispatcher`` per active webhook, all fetching from the
webhook's one durable consumer (``gateway.bus.durable``), which hands out one
message at a time: in order, and held by one replica. A batching webhook's
consumer hands out up to a batch, and only the replica holding the webhook's
lease (``gateway.webhooks.leases``) fetches, so batches keep the order too; its
messages are acknowledged or retried together. A 2xx acknowledges (and
is billed as a delivery); anything else is retried by a negative
acknowledgement with a delay: exponential backoff with jitter, or the
receiver's ``Retry-After`` on 429 and 503. A message that would be older than
the maximum age at its next attempt goes to the webhook's dead-letter queue.
Each dispatcher has its own HTTP client (``gateway.webhooks.client``) and
timeout, so a slow receiver holds up only its own webhook, never publishing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from gateway.billing import BillingGuard
from gateway.bus.durable import DurableConsumer, Stored
from gateway.errors import FlowGateError
from gateway.payload import QOS_HEADER, Kind, Payload
from gateway.principal import Owner
from gateway.queues import QueueEngine
from gateway.queues.messages import SendEntry
from gateway.settings import Settings
from gateway.sinks import Interest
from gateway.topics import Namespace, parse_subject
from gateway.webhooks.client import ClientError, Response, WebhookClient
from gateway.webhooks.deliverylog import DeliveryLog
from gateway.webhooks.leases import Leases
from gateway.webhooks.metrics import WebhookMetrics
from gateway.webhooks.records import Webhook
from gateway.webhooks.signing import sign
from gateway.webhooks.targets import check_target

log = logging.getLogger("flowgate.webhooks")

FETCH_WAIT = 5.0
USER_AGENT = "Flow-Gate-Webhooks/1"
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt, as the delivery log keeps it."""

    seq: int  # of the (first) message
    messages: int  # in the request (1 unless batching)
    attempt: int
    status: int | None
    latency_ms: float
    error: str
    outcome: str  # delivered, retry, dead_letter

    def encode(self, replica: str) -> bytes:
        return orjson.dumps(
            {
                "seq": self.seq,
                "messages": self.messages,
                "attempt": self.attempt,
                "status": self.status,
                "latency_ms": round(self.latency_ms, 1),
                "error": self.error,
                "outcome": self.outcome,
                "at": _iso(time.time()),
                "replica": replica,
            }
        )


@dataclass(frozen=True, slots=True)
class Context:
    """What every dispatcher of a process shares."""

    settings: Settings
    log: DeliveryLog
    metrics: WebhookMetrics
    guard: BillingGuard | None
    queues: QueueEngine
    replica: str
    leases: Leases


def render(stored: Stored, topic: str) -> bytes:
    """The JSON body POSTed for one message (the data keeps its type, as on SSE and WebSocket)."""
    payload = Payload.from_headers(stored.body, stored.headers)
    document: dict[str, Any] = {
        "type": "message",
        "id": f"msg_{stored.seq}",
        "topic": topic,
        "seq": stored.seq,
        "published_at": _iso(stored.stored_ns / 1e9),
        **payload.json_fields(),
    }
    qos = stored.headers.get(QOS_HEADER)
    if qos is not None:
        document["qos"] = int(qos) if qos.isdigit() else qos
    return orjson.dumps(document)


def render_batch(batch_id: str, messages: list[tuple[Stored, str]]) -> bytes:
    """The JSON body of a batch: ``{"type": "batch", "id", "messages": [<message bodies>]}``."""
    rendered = [orjson.Fragment(render(stored, topic)) for stored, topic in messages]
    return orjson.dumps({"type": "batch", "id": batch_id, "messages": rendered})


def retry_after(response: Response, now: float) -> float | None:
    """The delay a 429 or 503 asks for, in seconds."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


class Dispatcher:
    """Delivers one webhook's messages from this replica: one at a time, or in batches (``Webhook.batch``).

    A batching webhook's consumer hands out up to ``max_messages`` at once, so
    replicas take turns through a lease (``Leases``) to keep the order.
    """

    def __init__(self, webhook: Webhook, consumer: DurableConsumer, context: Context, *, exact: bool) -> None:
        self.webhook = webhook  # replaced in place when the record changes (url, secret, headers)
        self._consumer = consumer
        self._context = context
        self._interest = Interest((webhook.filter,))  # a webhook's filter never changes
        self._settled = self._interest.settled(None, exact=exact)  # every message on its subject is for it
        settings = context.settings
        self._client = WebhookClient(settings.webhook_timeout_seconds)
        self._task: asyncio.Task[None] | None = None
        self._delivering = False  # between a fetch and the acknowledgements of what it got
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"webhook {self.webhook.id}")

    async def stop(self) -> None:
        """Stop after the delivery in progress, if any (within the request timeout), else at once."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            if self._delivering:
                await asyncio.wait([task], timeout=self._context.settings.webhook_timeout_seconds + 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._consumer.close()
        await self._client.close()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self._next()
                if batch:
                    self._delivering = True
                    try:
                        await self._handle(batch)
                    finally:
                        self._delivering = False
            except FlowGateError as exc:  # NATS away, consumer deleted: try again shortly
                log.warning("webhook %s: %s", self.webhook.id, exc.message)
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not end this webhook's deliveries: the message comes again after AckWait
                log.exception("webhook %s: delivery failed", self.webhook.id)
                await asyncio.sleep(1.0)

    async def _next(self) -> list[Stored]:
        """The next message, or (batching) up to ``max_messages`` gathered within ``max_wait_ms``."""
        batching = self.webhook.batch
        if batching is None:
            return await self._consumer.fetch(1, FETCH_WAIT)
        leases = self._context.leases
        if not await leases.hold(self.webhook.id, self._context.replica):
            await asyncio.sleep(leases.ttl / 3)  # another replica delivers meanwhile
            return []
        # The first message as soon as it comes (a fetch of several waits for all of them until it expires),
        # then what else is there after max_wait_ms; all within a third of the lease.
        batch = await self._consumer.fetch(1, min(FETCH_WAIT, leases.ttl / 3))
        if batch and batching.max_messages > 1:
            if batching.max_wait_ms:
                await asyncio.sleep(batching.max_wait_ms / 1000)
            batch += await self._consumer.fetch(batching.max_messages - 1, 0.05)
        if batch and not await leases.hold(self.webhook.id, self._context.replica):
            for stored in batch:  # taken over meanwhile (this loop was starved): hand them back, in order
                await stored.nak(0)
            return []
        return batch

    async def _handle(self, batch: list[Stored]) -> None:
        webhook = self.webhook
        matching: list[tuple[Stored, Namespace, str]] = []
        for stored in batch:
            namespace, topic = parse_subject(stored.subject)
            if self._settled or self._interest.wants(topic):
                matching.append((stored, namespace, topic))
            else:
                await stored.ack()  # on the consumer's wider subject, or a ``$`` topic: not this filter's
        if not matching:
            return
        first = matching[0][0]
        if webhook.batch is None:
            msg_id, body = f"msg_{first.seq}", render(first, matching[0][2])
        else:
            msg_id = f"batch_{first.seq}_{matching[-1][0].seq}"
            body = render_batch(msg_id, [(stored, topic) for stored, _, topic in matching])
        started = time.monotonic()
        status: int | None = None
        error = ""
        delay: float | None = None
        try:
            await check_target(webhook.url, allow_private=self._context.settings.webhook_allow_private)
            headers = {
                **webhook.headers,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **sign(webhook.key, msg_id, int(time.time()), body),
            }
            response = await self._client.post(webhook.url, body, headers)
            status = response.status_code
            if 200 <= status < 300:
                await self._delivered(matching, status, time.monotonic() - started)
                return
            error = f"HTTP {status}"
            delay = retry_after(response, time.time())
        except FlowGateError as exc:
            error = exc.message
        except ClientError as exc:
            error = str(exc)
        await self._failed(matching, status, error, delay, time.monotonic() - started)

    async def _delivered(self, batch: list[tuple[Stored, Namespace, str]], status: int, latency: float) -> None:
        for stored, _, _ in batch:
            await stored.ack()
        context = self._context
        context.metrics.observe("delivered", latency)
        if context.guard is not None:
            context.guard.record_delivery(batch[0][1], len(batch))
        first = batch[0][0]
        self._log(Attempt(first.seq, len(batch), first.delivered, status, latency * 1000, "", "delivered"))

    async def _failed(
        self,
        batch: list[tuple[Stored, Namespace, str]],
        status: int | None,
        error: str,
        asked: float | None,
        latency: float,
    ) -> None:
        settings = self._context.settings
        first = batch[0][0]
        if asked is None:
            backoff = settings.webhook_retry_base_seconds * 2 ** min(first.delivered - 1, 30)
            delay = min(settings.webhook_retry_max_seconds, backoff) * random.uniform(0.5, 1.0)
        else:
            delay = min(MAX_RETRY_AFTER, asked)  # the receiver knows best, within reason
        age = time.time() - first.stored_ns / 1e9
        outcome = "retry"
        max_age = self.webhook.max_age_seconds or settings.webhook_max_age_seconds
        if age + delay > max_age:
            try:
                for stored, namespace, topic in batch:
                    await self._dead_letter(stored, namespace, topic, error)
                outcome = "dead_letter"
            except FlowGateError as exc:
                log.warning("webhook %s: dead-letter queue refused a message: %s", self.webhook.id, exc.message)
                error = f"{error}; dead-letter queue: {exc.message}"
        for stored, _, _ in batch:
            if outcome == "dead_letter":
                await stored.ack()
            else:
                await stored.nak(delay)
        self._context.metrics.observe(outcome if outcome == "dead_letter" else "failed", latency)
        self._log(Attempt(first.seq, len(batch), first.delivered, status, latency * 1000, error, outcome))

    async def _dead_letter(self, stored: Stored, namespace: Namespace, topic: str, error: str) -> None:
        """Store one message in the webhook's dead-letter queue (a repeated move stores it once)."""
        webhook = self.webhook
        document = {
            "webhook_id": webhook.id,
            "attempts": stored.delivered,
            "last_error": error,
            "message": orjson.Fragment(render(stored, topic)),
        }
        entry = SendEntry(Payload(orjson.dumps(document), Kind.JSON))
        [result] = await self._context.queues.send_messages(Owner(namespace), webhook.dead_letter_queue, [entry])
        if isinstance(result, FlowGateError):
            raise result

    def _log(self, attempt: Attempt) -> None:
        self._context.log.add(self.webhook.id, attempt.encode(self._context.replica))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
