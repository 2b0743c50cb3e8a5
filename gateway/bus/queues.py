"""Work streams for SQS-style queues: one stream and one durable pull consumer per queue.

Owns everything JetStream about queues; the engine in ``gateway.queues`` sees
only the types below. Each queue is a work-queue stream ``FGQ_<id>`` on subject
``fg.q.<id>`` with one durable pull consumer ``worker`` (explicit acks, AckWait
= the queue's default visibility timeout, no delivery limit: redrive is the
engine's). An ack removes the message from the stream, so a deleted message is
gone for good. Delayed sends wait in the shared stream ``FG_QUEUE_DELAYED``
(subject ``fg.qd.<id>``) until the engine's scheduler moves them.

Pulls go through a pool of inboxes, one per pull in progress. A pull that is
abandoned (cancelled, or the bus went away) keeps its inbox subscribed until
its request has expired on the server; any message that still arrives there is
handed to ``on_orphan`` so that the engine can release it. A no-wait pull left
unanswered (the server's count of undelivered messages can outlive a purge) is
drained, its consumer recounted and the pull sent again.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from gateway.bus.core import Bus, BusState
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, NotFound, Unavailable
from gateway.payload import Payload

log = logging.getLogger("flowgate.queues")

QUEUE_SUBJECT_ROOT = "fg.q"
DELAYED_STREAM = "FG_QUEUE_DELAYED"
DELAYED_SUBJECT_ROOT = "fg.qd"
CONSUMER = "worker"
MAX_IN_FLIGHT = 120_000  # like SQS's in-flight limit of a standard queue
MAX_WAITING_PULLS = 4096
_REQUEST_TIMEOUT = 5.0
_EXPIRY_MARGIN = 2.0
_NO_WAIT_PATIENCE = 2.0  # a no-wait pull is answered in milliseconds; unanswered this long, it waits for nothing


def queue_stream(queue_id: str) -> str:
    return f"FGQ_{queue_id}"


def queue_subject(queue_id: str) -> str:
    return f"{QUEUE_SUBJECT_ROOT}.{queue_id}"


def delayed_subject(queue_id: str) -> str:
    return f"{DELAYED_SUBJECT_ROOT}.{queue_id}"


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """What is needed to acknowledge one delivery later, from any replica."""

    stream_seq: int
    delivery_seq: int
    delivered: int  # JetStream's delivery count, including redeliveries after naks
    timestamp_ns: int  # when the message was stored


@dataclass(frozen=True, slots=True)
class Pulled:
    """One message handed out by a pull."""

    subject: str
    ref: DeliveryRef
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class WorkStats:
    stored: int  # messages in the stream
    undelivered: int  # never handed out
    unacknowledged: int  # handed out, not acknowledged yet


OnOrphan = Callable[[str, Pulled], None]


def parse_ack_subject(reply: str) -> tuple[str, DeliveryRef]:
    """The stream and delivery of a JetStream ack subject (``$JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>``)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        offset = 2
    elif len(tokens) >= 11:  # newer servers add domain and account hash
        offset = 4
    else:
        raise ValueError(f"not an ack subject: {reply!r}")
    stream = tokens[offset]
    dc, sseq, dseq, ts = (int(t) for t in tokens[offset + 2 : offset + 6])
    return stream, DeliveryRef(sseq, dseq, dc, ts)


def _ack_subject(stream: str, ref: DeliveryRef) -> str:
    return f"$JS.ACK.{stream}.{CONSUMER}.{ref.delivered}.{ref.stream_seq}.{ref.delivery_seq}.{ref.timestamp_ns}.0"


class _Inbox:
    """A subscription for pull replies, reused when a pull ends cleanly.

    Each pull replies to ``<subject>.<n>``, so a status left over from an earlier
    pull (status messages carry the reply subject) is told apart and ignored.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.requests = itertools.count(1)
        self.sub: Subscription | None = None
        self.queue: asyncio.Queue[Msg] | None = None


class WorkQueues:
    """Queue streams and their consumers, on the gateway's one NATS connection."""

    def __init__(self, bus: Bus, on_orphan: OnOrphan) -> None:
        self._bus = bus
        self._on_orphan = on_orphan
        self._free: list[_Inbox] = []
        self._abandoned: set[asyncio.Task[None]] = set()
        self._replies_inbox = ""
        self._reply_tokens = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Msg]] = {}

    @property
    def _nc(self) -> Client:
        nc = self._bus._nc
        if nc is None or not nc.is_connected:
            raise Unavailable("message bus unavailable; retry shortly")
        return nc

    async def start(self) -> None:
        nc = self._nc
        self._replies_inbox = nc.new_inbox()
        with nats_errors("subscribe to acknowledgement replies"):
            await nc.subscribe(self._replies_inbox + ".*", cb=self._on_reply)
        self._bus.add_listener(self._on_bus_state)
        await self._bus.ensure_stream(
            api.StreamConfig(
                name=DELAYED_STREAM,
                subjects=[f"{DELAYED_SUBJECT_ROOT}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_age=float(14 * 86400 + 3600),
                duplicate_window=120.0,
                num_replicas=self._bus.settings.replicas,
            )
        )
        await self._ensure_consumer(DELAYED_STREAM, ack_wait=30, max_ack_pending=1_000_000)

    async def close(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        for inbox in self._free:
            await self._unsubscribe(inbox)
        self._free.clear()

    # -- streams -------------------------------------------------------------------------

    async def ensure(
        self, queue_id: str, *, retention_seconds: int, ack_wait: int, duplicate_window: float | None = None
    ) -> None:
        """Create (or update) a queue's stream and consumer; ``duplicate_window`` defaults to the retention."""
        await self._bus.ensure_stream(
            api.StreamConfig(
                name=queue_stream(queue_id),
                subjects=[queue_subject(queue_id)],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_age=float(retention_seconds),
                # Dead-letter moves carry a message id: remember it as long as a message can live.
                duplicate_window=float(retention_seconds) if duplicate_window is None else duplicate_window,
                num_replicas=self._bus.settings.replicas,
            )
        )
        await self._ensure_consumer(queue_stream(queue_id), ack_wait=ack_wait, max_ack_pending=MAX_IN_FLIGHT)

    async def _ensure_consumer(self, stream: str, *, ack_wait: int, max_ack_pending: int) -> None:
        config = api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=float(ack_wait),
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            max_waiting=MAX_WAITING_PULLS,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        with nats_errors(f"create consumer on {stream}"):
            await self._bus.js.add_consumer(stream, config)  # idempotent; updates AckWait when it changed

    async def delete(self, queue_id: str) -> None:
        with nats_errors(f"delete queue stream {queue_id}"):
            try:
                await self._bus.js.delete_stream(queue_stream(queue_id))
            except nats.js.errors.NotFoundError:
                pass
        await self.purge_delayed(queue_id)

    async def purge(self, queue_id: str) -> None:
        stream = queue_stream(queue_id)
        with nats_errors(f"purge queue {queue_id}"):
            await self._bus.js.purge_stream(stream)
        await self.recount(stream)
        await self.purge_delayed(queue_id)

    async def purge_delayed(self, queue_id: str) -> None:
        with nats_errors(f"purge delayed messages of {queue_id}"):
            await self._bus.js.purge_stream(DELAYED_STREAM, subject=delayed_subject(queue_id))
        await self.recount(DELAYED_STREAM)

    async def recount(self, stream: str) -> None:
        """Make the server recount what the stream's consumer has left to deliver (after a purge).

        A purge can leave the consumer's count of undelivered messages as it was
        before (nats-server 2.9 does when the consumer had delivered messages and
        undelivered ones were purged). A no-wait pull then waits, with no expiry,
        for messages that no longer exist instead of answering "no messages".
        Reading the consumer's info makes the server recount; a stream or
        consumer that is gone has nothing to recount.
        """
        try:
            with nats_errors(f"read the consumer of {stream}"):
                await self._bus.js.consumer_info(stream, CONSUMER)
        except NotFound:
            pass

    async def exists(self, queue_id: str) -> bool:
        try:
            with nats_errors(f"read queue stream {queue_id}"):
                await self._bus.js.stream_info(queue_stream(queue_id))
        except NotFound:
            return False
        return True

    async def stats(self, queue_id: str) -> WorkStats:
        js = self._bus.js
        stream = queue_stream(queue_id)
        with nats_errors(f"read queue {queue_id}"):
            info, consumer = await asyncio.gather(js.stream_info(stream), js.consumer_info(stream, CONSUMER))
        return WorkStats(info.state.messages, consumer.num_pending or 0, consumer.num_ack_pending or 0)

    async def delayed_count(self, queue_id: str) -> int:
        subject = delayed_subject(queue_id)
        with nats_errors("read delayed messages"):
            info = await self._bus.js.stream_info(DELAYED_STREAM, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)

    async def message_stored(self, queue_id: str, seq: int) -> bool:
        try:
            with nats_errors(f"read message {seq} of {queue_id}"):
                await self._bus.js.get_msg(queue_stream(queue_id), seq)
        except NotFound:
            return False
        return True

    # -- messages ----------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: Payload, headers: dict[str, str], *, msg_id: str | None = None
    ) -> tuple[int, bool]:
        """Store one message; (stream sequence, whether it was a duplicate of ``msg_id``)."""
        ack = await self._bus.publish(subject, payload, msg_id=msg_id, headers=headers)
        return ack.seq, ack.duplicate

    async def pull(self, stream: str, batch: int, *, wait: float) -> list[Pulled]:
        """Up to ``batch`` messages available now (``wait`` 0), or within ``wait`` seconds.

        A waiting pull returns as soon as the server delivered ``batch`` messages,
        so long polls ask for one and top up with an immediate pull. A no-wait
        pull that the server leaves unanswered (its consumer still counts
        messages that a purge removed: see ``recount``) is given up after
        ``_NO_WAIT_PATIENCE``: its inbox is drained (the server then drops the
        request rather than hand it the next message sent), the consumer
        recounted and the pull sent again.
        """
        if wait > 0:
            out, _ = await self._pull_once(stream, batch, wait=wait, patience=None)
            return out
        out, answered = await self._pull_once(stream, batch, wait=0, patience=_NO_WAIT_PATIENCE)
        if answered or out:
            return out
        log.info("a no-wait pull from %s was not answered; recounting its consumer", stream)
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):  # both steps together, like any one request
                await self.recount(stream)
                out, _ = await self._pull_once(stream, batch, wait=0, patience=None)
        except TimeoutError:
            raise Unavailable(f"pull from {stream} not answered in time; retry") from None
        return out

    async def _pull_once(
        self, stream: str, batch: int, *, wait: float, patience: float | None
    ) -> tuple[list[Pulled], bool]:
        """One pull request; (messages, whether the server ended it).

        With ``patience`` (no-wait pulls only), a request the server leaves
        open that long is given up (its inbox drained) and what it delivered so
        far returned; without, it raises ``Unavailable`` after the request's own time.
        """
        nc = self._nc
        inbox = await self._take_inbox(nc)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        inbox.queue = queue
        reply = f"{inbox.subject}.{next(inbox.requests)}"
        request: dict[str, object] = {"batch": batch}
        if wait <= 0:
            request["no_wait"] = True
            expires = 0.0
        else:
            expires = wait
            request["expires"] = int(wait * 1e9)
        clean = stalled = False
        out: list[Pulled] = []
        try:
            with nats_errors(f"pull from {stream}"):
                await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{CONSUMER}", orjson.dumps(request), reply=reply)
            async with asyncio.timeout(expires + _REQUEST_TIMEOUT if patience is None else patience):
                while len(out) < batch:
                    msg = await queue.get()
                    status = (msg.headers or {}).get("Status")
                    if status is not None:
                        if msg.subject != reply:
                            continue  # about an earlier pull
                        if status in ("404", "408"):
                            break
                        if status == "100":
                            continue
                        description = (msg.headers or {}).get("Description") or ""
                        if status == "409" and "deleted" in str(description).lower():
                            raise NotFound("the queue was deleted")
                        raise Unavailable(f"pull from {stream} refused: {status} {description}")
                    pulled = self._to_pulled(msg)
                    if pulled is not None:
                        out.append(pulled)
            clean = True
        except TimeoutError:
            if patience is None:
                raise Unavailable(f"pull from {stream} not answered in time; retry") from None
            stalled = True
        finally:
            inbox.queue = None
            if clean:
                self._free.append(inbox)
            elif not stalled:
                self._abandon(inbox, expires + _EXPIRY_MARGIN)
                for pulled in out:  # taken from the server but never handed to the caller
                    self._on_orphan(stream, pulled)
        if stalled:
            try:
                await self._drain(inbox)
            except BaseException:  # cancelled: what was taken goes back
                for pulled in out:
                    self._on_orphan(stream, pulled)
                raise
        return out, clean

    async def pull_available(self, stream: str, batch: int, *, wait: float) -> list[Pulled]:
        """Up to ``batch`` messages, returning as soon as at least one is available (or after ``wait``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out = await self.pull(stream, batch, wait=0)
        wait = deadline - loop.time()  # what the immediate pull took is part of the wait
        if out or wait < 0.01:
            return out
        out = await self.pull(stream, 1, wait=wait)
        if out and batch > 1:
            out += await self.pull(stream, batch - 1, wait=0)
        return out

    @staticmethod
    def _to_pulled(msg: Msg) -> Pulled | None:
        try:
            _, ref = parse_ack_subject(msg.reply)
        except ValueError:
            log.warning("ignoring queue message without a JetStream ack subject")
            return None
        headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
        return Pulled(msg.subject, ref, msg.data, headers)

    async def _take_inbox(self, nc: Client) -> _Inbox:
        if self._free:
            return self._free.pop()
        inbox = _Inbox(nc.new_inbox())

        async def deliver(msg: Msg) -> None:
            if inbox.queue is not None:
                inbox.queue.put_nowait(msg)
                return
            if (msg.headers or {}).get("Status") is not None or not msg.reply:
                return
            pulled = self._to_pulled(msg)
            if pulled is not None:
                stream, _ = parse_ack_subject(msg.reply)
                self._on_orphan(stream, pulled)

        with nats_errors("subscribe a pull inbox"):
            inbox.sub = await nc.subscribe(inbox.subject + ".*", cb=deliver)
        return inbox

    def _abandon(self, inbox: _Inbox, linger: float) -> None:
        """Keep an abandoned pull's inbox until its request expired, releasing late arrivals."""

        async def linger_then_close() -> None:
            try:
                await asyncio.sleep(linger)
            finally:
                await self._unsubscribe(inbox)

        task = asyncio.get_running_loop().create_task(linger_then_close())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def _drain(self, inbox: _Inbox) -> None:
        """End an inbox's interest at once, so that the server drops a request still waiting on it.

        What the server had sent before it processed the unsubscribe still
        arrives and is released (``on_orphan``), as for a lingering inbox.
        """
        sub, inbox.sub = inbox.sub, None
        if sub is None:
            return
        try:
            with nats_errors("drain a pull inbox"):
                await sub.drain()  # type: ignore[no-untyped-call]
        except FlowGateError:
            log.debug("drain of %s failed", inbox.subject, exc_info=True)

    async def _unsubscribe(self, inbox: _Inbox) -> None:
        sub, inbox.sub = inbox.sub, None
        if sub is None:
            return
        try:
            with nats_errors("unsubscribe a pull inbox"):
                await sub.unsubscribe()
        except FlowGateError:
            log.debug("unsubscribe of %s failed", inbox.subject, exc_info=True)

    async def _ack_request(self, subject: str, body: bytes) -> None:
        """Send an acknowledgement and wait for the server's confirmation."""
        reply = await self._request(subject, body, "acknowledge a queue message")
        if (reply.headers or {}).get("Status") == "503":  # no responders: the consumer is gone
            raise NotFound("the queue was deleted")

    async def last_value(self, stream: str, subject: str) -> bytes | None:
        """The last message on ``subject`` in ``stream`` (a KV read), or ``None``; on the pipelined path.

        A KV delete or purge marker (``KV-Operation`` header) counts as absent.
        """
        request = orjson.dumps({"last_by_subj": subject})
        reply = await self._request(f"$JS.API.STREAM.MSG.GET.{stream}", request, f"read {subject}")
        try:
            answer = orjson.loads(reply.data)
        except orjson.JSONDecodeError:
            raise Unavailable(f"read {subject}: unexpected answer") from None
        error = answer.get("error")
        if error is not None:
            if error.get("code") == 404:
                return None
            raise Unavailable(f"read {subject}: {error.get('description', 'JetStream error')}")
        message = answer.get("message") or {}
        headers = base64.b64decode(message.get("hdrs") or "")
        if b"KV-Operation" in headers:
            return None
        return base64.b64decode(message.get("data") or "")

    async def _request(self, subject: str, body: bytes, doing: str) -> Msg:
        """A request whose answer comes to one wildcard inbox, resolving a future by token.

        Like the bus's publishes: many in flight, no task per request.
        """
        nc = self._nc
        token = next(self._reply_tokens)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._replies[token] = future
        try:
            with nats_errors(doing):
                await nc.publish(subject, body, reply=f"{self._replies_inbox}.{token}")
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                return await future
        except TimeoutError:
            raise Unavailable(f"{doing}: the message bus did not answer in time; retry") from None
        finally:
            self._replies.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[1]
        future = self._replies.pop(int(token), None) if token.isdigit() else None
        if future is not None and not future.done():
            future.set_result(msg)

    def _on_bus_state(self, state: BusState) -> None:
        if state is BusState.DISCONNECTED:
            pending, self._replies = self._replies, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(Unavailable("message bus connection lost; retry"))

    async def ack(self, stream: str, ref: DeliveryRef) -> None:
        """Acknowledge (and so remove) a message; returns once the server processed it."""
        await self._ack_request(_ack_subject(stream, ref), b"+ACK")

    async def nak(self, stream: str, ref: DeliveryRef, *, delay: float = 0.0) -> None:
        """Make a delivered message available again now, or after ``delay`` seconds (still unacknowledged)."""
        body = b"-NAK" if delay <= 0 else b"-NAK " + orjson.dumps({"delay": int(delay * 1e9)})
        await self._ack_request(_ack_subject(stream, ref), body)

    async def in_progress(self, stream: str, ref: DeliveryRef) -> None:
        """Restart a delivery's AckWait."""
        await self._ack_request(_ack_subject(stream, ref), b"+WPI")
