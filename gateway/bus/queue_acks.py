"""Acknowledgements of queue deliveries, and KV reads on the same path: requests answered on one inbox.

Like the bus's publishes, many are in flight at once with no task per
request: each request's reply subject is ``<inbox>.<token>`` under one wildcard
subscription, and the reply resolves the token's future.
"""

from __future__ import annotations

import asyncio
import base64
import itertools

import orjson
from nats.aio.msg import Msg

from gateway.bus.core import Bus, BusState
from gateway.bus.queue_types import CONSUMER, REQUEST_TIMEOUT, DeliveryRef, live_client
from gateway.bus.translate import nats_errors
from gateway.errors import NotFound, Unavailable


def _ack_subject(stream: str, ref: DeliveryRef) -> str:
    return f"$JS.ACK.{stream}.{CONSUMER}.{ref.delivered}.{ref.stream_seq}.{ref.delivery_seq}.{ref.timestamp_ns}.0"


class QueueAcks:
    """Acknowledgements (``ack``, ``nak``, ``in_progress``) and ``last_value`` reads, pipelined."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._replies_inbox = ""
        self._reply_tokens = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Msg]] = {}

    async def start(self) -> None:
        nc = live_client(self._bus)
        self._replies_inbox = nc.new_inbox()
        with nats_errors("subscribe to acknowledgement replies"):
            await nc.subscribe(self._replies_inbox + ".*", cb=self._on_reply)
        self._bus.add_listener(self._on_bus_state)

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
        nc = live_client(self._bus)
        token = next(self._reply_tokens)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._replies[token] = future
        try:
            with nats_errors(doing):
                await nc.publish(subject, body, reply=f"{self._replies_inbox}.{token}")
            async with asyncio.timeout(REQUEST_TIMEOUT):
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
