"""Pulls from queue consumers, through a pool of inboxes, one per pull in progress.

A pull that is abandoned (cancelled, or the bus went away) keeps its inbox
subscribed until its request has expired on the server; any message that still
arrives there is handed to ``on_orphan`` so that the queue engine can release
it. A no-wait pull left unanswered (the server's count of undelivered messages
can outlive a purge) is drained, its consumer recounted and the pull sent again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.bus.core import Bus
from gateway.bus.queue_types import CONSUMER, REQUEST_TIMEOUT, OnOrphan, Pulled, live_client, parse_ack_subject
from gateway.bus.translate import nats_errors
from gateway.errors import FlowGateError, NotFound, Unavailable

log = logging.getLogger("flowgate.queues")

_EXPIRY_MARGIN = 2.0
_NO_WAIT_PATIENCE = 2.0  # a no-wait pull is answered in milliseconds; unanswered this long, it waits for nothing


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


class Pulls:
    """Pulls from the queue streams' consumers on the gateway's one NATS connection."""

    def __init__(self, bus: Bus, on_orphan: OnOrphan) -> None:
        self._bus = bus
        self._on_orphan = on_orphan
        self._free: list[_Inbox] = []
        self._abandoned: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        for inbox in self._free:
            await self._unsubscribe(inbox)
        self._free.clear()

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
            async with asyncio.timeout(REQUEST_TIMEOUT):  # both steps together, like any one request
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
        nc = live_client(self._bus)
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
            async with asyncio.timeout(expires + REQUEST_TIMEOUT if patience is None else patience):
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
