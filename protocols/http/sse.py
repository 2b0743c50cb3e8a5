"""``GET /api/v1/subscribe``: Server-Sent Events.

Each event is ``id: <seq>`` / ``event: message`` / ``data: {"topic", "data",
"seq", "published_at"}``. ``Last-Event-ID`` (or ``last_event_id=``) resumes
right after that sequence with no gap and no duplicate; if retention already
removed part of what follows, an ``event: gap`` says so first. Live streams
share the fan-out hub; a resuming stream reads its own ordered consumer from
the stream, which then continues live. A heartbeat comment keeps idle streams
open through proxies. A stream whose client stops reading is closed when its
buffer fills (the browser's EventSource reconnects with ``Last-Event-ID``).
When the user is disabled or deleted or the token revoked (``auth.revocations``)
the stream ends with an ``event: revoked`` saying why (not ``error``, a name
EventSource uses itself); its reconnection then gets the 401/403.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

from auth.revocations import LiveHandle
from gateway.billing import ConnectionLease
from gateway.errors import BadRequest, FlowGateError, Forbidden
from gateway.events import Session
from gateway.feeds import Feed
from gateway.outbox import Outbox, SlowConsumer, tagged
from gateway.payload import Delivery
from gateway.sinks import FilteredSink, Interest
from gateway.topics import Namespace
from protocols.http.deps import Handler, claims_of
from protocols.services import Services

log = logging.getLogger("flowgate.sse")

MAX_TOPICS = 32
BATCH = 64

OPENAPI = {
    "get": {
        "tags": ["messages"],
        "summary": "Stream messages with Server-Sent Events",
        "parameters": [
            {
                "name": "topic",
                "in": "query",
                "required": True,
                "schema": {"type": "array", "items": {"type": "string"}},
                "style": "form",
                "explode": True,
            },
            {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}},
        ],
        "responses": {"200": {"description": "text/event-stream"}},
    }
}


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_event(delivery: Delivery) -> bytes:
    data = orjson.dumps(
        {
            "topic": delivery.topic,
            **delivery.payload.json_fields(),
            "seq": delivery.seq,
            "published_at": iso(delivery.published_at),
        }
    )
    return b"id: %d\nevent: message\ndata: %s\n\n" % (delivery.seq, data)


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest("Last-Event-ID must be a stream sequence number")
    return int(raw)


class SseStream:
    def __init__(
        self,
        services: Services,
        subject: str,
        outbox: Outbox[tuple[object, Delivery]],
        sink: FilteredSink,
        since: int | None,
        *,
        namespace: Namespace | None = None,
        lease: ConnectionLease | None = None,
    ) -> None:
        self.services = services
        self.subject = subject
        self.outbox = outbox
        self.namespace = namespace  # deliveries are billed to it
        self.lease = lease  # the connection counted against the plan
        self.session: Session | None = None  # connection events and presence (gateway.events)
        self.feed = Feed(services.hub, services.bus, subject, sink, since)
        self._forget_drain = services.draining.on_drain(outbox.close)  # end the stream at shutdown
        self._preamble = b"retry: 2000\n: connected\n\n"
        self.revoked_by: FlowGateError | None = None
        self.live: LiveHandle | None = None  # registered with the revocations once open
        self._end_reason = "client closed"

    def revoked(self, exc: FlowGateError) -> None:
        self.revoked_by = exc
        self._end_reason = exc.message
        self.outbox.close()

    async def open(self) -> None:
        """Subscribe before the response starts, so a failure is still a proper HTTP error."""
        gap = await self.feed.gap()
        if gap is not None:
            data = orjson.dumps(
                {
                    "requested_seq": gap.requested_seq,
                    "first_available_seq": gap.first_available_seq,
                    "reason": "retention",
                }
            )
            self._preamble += b"event: gap\ndata: %s\n\n" % data
        await self.feed.open()

    async def close(self) -> None:
        """Release the subscription; idempotent (runs from the generator and as the response's background task)."""
        self.outbox.close()
        self._forget_drain()
        if self.live is not None:
            self.live.detach()
        if self.session is not None:
            self.session.closed(self._end_reason)
        if self.lease is not None:
            self.lease.close()
        await self.feed.close()

    async def events(self) -> AsyncIterator[bytes]:
        outbox = self.outbox
        heartbeat = self.services.settings.sse_heartbeat_seconds
        try:
            yield self._preamble
            while True:
                item = await outbox.get(timeout=heartbeat)
                if item is None:
                    if outbox.closed:
                        if self.revoked_by is not None:
                            yield b"event: revoked\ndata: %s\n\n" % orjson.dumps(self.revoked_by.to_dict())
                        elif self.services.draining.started:  # reconnect elsewhere soon, not all at once
                            yield b"retry: %d\n: server shutting down\n\n" % (1000 + random.randrange(2000))
                        return
                    yield b": heartbeat\n\n"
                    continue
                chunk = [item, *outbox.drain(BATCH)]
                if self.namespace is not None:
                    self.services.guard.record_delivery(self.namespace, len(chunk))
                yield b"".join(d.frame("sse", render_event) for _, d in chunk)
        except SlowConsumer:
            self._end_reason = "slow consumer: outbound buffer full"
            log.warning("closing slow SSE consumer on %s (buffer of %d full)", self.subject, outbox.maxsize)
        finally:
            await self.close()


def endpoint(services: Services) -> Handler:
    """The ``GET /api/v1/subscribe`` handler, streaming with ``services``."""
    return partial(subscribe, services)


async def subscribe(services: Services, request: Request) -> StreamingResponse:
    claims = claims_of(services.tokens, request, allow_query=True)
    names = request.query_params.getlist("topic")
    if not names or len(names) > MAX_TOPICS:
        raise BadRequest(f"give 1-{MAX_TOPICS} topic parameters")
    filters = [claims.namespace.filter(name) for name in names]
    rule = claims.permissions.subscribe
    for topic_filter in filters:
        if not rule.permits_filter(topic_filter):
            services.events.auth_failed(claims.namespace, "sse", f"may not subscribe to {topic_filter!r}")
            raise Forbidden(f"this token may not subscribe to {topic_filter!r}")
    subject, exact = claims.namespace.subscription_subject(filters)
    outbox: Outbox[tuple[object, Delivery]] = Outbox(services.settings.outbound_queue_size)
    sink = FilteredSink(Interest(tuple(filters)), rule, tagged(outbox), exact=exact)
    since = _last_event_id(request)
    lease = await services.guard.connect(claims, "sse")  # 402 when the quota is spent or all connections are open
    stream = SseStream(services, subject, outbox, sink, since, namespace=claims.namespace, lease=lease)
    try:
        await stream.open()
    except BaseException:
        lease.close()
        raise
    stream.live = services.tokens.revocations.attach(claims, stream.revoked)
    stream.session = services.events.connected(
        claims.namespace, "sse", info=request.query_params.get("info"), filters=filters
    )
    return StreamingResponse(
        stream.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(stream.close),
    )
