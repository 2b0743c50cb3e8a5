"""A WebSocket subscription that survives reconnects: several filters, resume from the last seq, no repeats.

The connection loop runs in one background task. Each (re)connection takes a
fresh token, subscribes every filter with ``since`` = the last seq that filter
delivered (so the gateway replays exactly what was missed), answers
``token_expiring`` with ``auth``, and on a dropped connection waits an
exponential backoff with full jitter before trying again. A message that two
overlapping filters both deliver, or that a replay repeats, is handed out once
(seen seqs are remembered in a bounded window).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from flowgate_client.errors import (
    ApiError,
    ConnectionFailed,
    FlowGateError,
    PaymentRequired,
    Unauthorized,
    error_from_body,
)
from flowgate_client.models import Gap, Message
from flowgate_client.tokens import TokenSource

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("flowgate_client")

SEEN_WINDOW = 100_000
FATAL_CLOSE = {4402: PaymentRequired}


@dataclass(frozen=True, kw_only=True, slots=True)
class Reconnect:
    """Backoff between reconnection attempts: ``delay`` doubled per failure up to ``max_delay``, full jitter."""

    delay: float = 0.1
    max_delay: float = 5.0
    max_attempts: int | None = None  # consecutive failed attempts before giving up; None = forever
    first_attempts: int | None = 5  # failed attempts before the first connection gives up (None = forever)

    def wait(self, failures: int) -> float:
        return random.uniform(self.delay / 2, min(self.max_delay, self.delay * 2 ** min(failures, 16)))


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching: ``+`` one level, ``#`` the rest (``a/#`` matches ``a``); no wildcard-first match on ``$``."""
    if topic_filter[:1] in ("+", "#") and topic.startswith("$"):
        return False
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class Subscription:
    """``async with client.subscribe("a", "sensors/+", since=0) as sub: async for msg in sub: ...``"""

    def __init__(
        self,
        tokens: TokenSource,
        ws_url: str,
        filters: tuple[str, ...],
        *,
        since: int | None,
        reconnect: Reconnect,
        buffer: int = 1000,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        if not filters:
            raise ValueError("subscribe needs at least one topic filter")
        self._tokens = tokens
        self._ws_url = ws_url
        self._filters = filters
        self._last: dict[str, int | None] = dict.fromkeys(filters, since)
        self._reconnect = reconnect
        self._items: asyncio.Queue[Message | Gap | BaseException] = asyncio.Queue(buffer)
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False  # every filter acknowledged on the current connection
        self._error: BaseException | None = None  # what ended the subscription (StopAsyncIteration: closed)
        self._ids = itertools.count(1)
        self._on_gap = on_gap
        self._prefix = ""
        self.gaps: list[Gap] = []
        self.connections = 0  # how many times a connection was established (1 + reconnects)
        self.last_seq: int | None = since

    # -- public ----------------------------------------------------------------------------

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and wait until every filter is subscribed (raises what stops it for good)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="flowgate-subscription")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not self._ready.is_set():
            await self._task  # finished without ever being ready: raises its error
        if not self._ready.is_set() and not self._items.empty():
            item = self._items.get_nowait()
            if isinstance(item, BaseException):
                raise item

    async def close(self) -> None:
        """Disconnect; an iteration in progress ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._error is None:
            self._error = StopAsyncIteration()
            with contextlib.suppress(asyncio.QueueFull):
                self._items.put_nowait(self._error)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        async for item in self.events():
            if isinstance(item, Message):
                yield item

    async def events(self) -> AsyncIterator[Message | Gap]:
        """Messages and gaps (retention removed part of what a resume asked for), in arrival order."""
        while True:
            if self._items.empty() and self._error is not None:
                item: Message | Gap | BaseException = self._error  # ended: raise again, or stop
            else:
                item = await self._items.get()
            if isinstance(item, StopAsyncIteration):
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        from websockets.asyncio.client import connect  # the client module is slow to import; only subscribers need it

        failures = 0
        force_token = False
        while True:
            try:
                fresh, force_token = force_token, False
                token = await self._tokens.get(force=fresh)
                self._subscribed = False
                self._prefix = token.topic_prefix
                headers = {"Authorization": f"Bearer {token.token}"}  # not in the URL, where proxies log it
                async with connect(
                    f"{self._ws_url}/ws", additional_headers=headers, open_timeout=10, max_size=None, ping_interval=20
                ) as ws:
                    failures = 0
                    self.connections += 1
                    await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                fatal = FATAL_CLOSE.get(code or 0)
                if fatal is not None:
                    await self._fail(fatal(exc.rcvd.reason if exc.rcvd else "", status=402, code="payment_required"))
                    return
                if code == 4401 and fresh and not self._subscribed:
                    reason = exc.rcvd.reason if exc.rcvd else ""
                    await self._fail(Unauthorized(f"a new token was refused too: {reason}", code="unauthorized"))
                    return
                force_token = code == 4401
                failures += 1
                log.info("subscription connection closed (%s); reconnecting", code)
            except ApiError as exc:
                if exc.status not in (429, 503):
                    await self._fail(exc)
                    return
                failures += 1
            except (OSError, InvalidHandshake, TimeoutError, ConnectionFailed) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
                    await self._fail(error_from_body(exc.response.status_code, None))
                    return
                failures += 1
                log.info("subscription connection failed (%r); retrying", exc)
            except FlowGateError as exc:
                await self._fail(exc)
                return
            limit = self._reconnect.max_attempts if self.connections else self._reconnect.first_attempts
            if limit is not None and failures >= limit:
                await self._fail(ConnectionFailed(f"gave up after {failures} failed connection attempts"))
                return
            await asyncio.sleep(self._reconnect.wait(failures))

    async def _fail(self, error: BaseException) -> None:
        self._error = error
        await self._items.put(error)

    def _short(self, topic_filter: str) -> str:
        if self._prefix and topic_filter.startswith(self._prefix):
            return topic_filter[len(self._prefix) :]
        return topic_filter

    async def _serve(self, ws: ClientConnection) -> None:
        pending: dict[int, str] = {}
        fallback = self._resume_hint()
        for topic_filter in self._filters:
            frame_id = next(self._ids)
            pending[frame_id] = topic_filter
            frame: dict[str, Any] = {"action": "subscribe", "topic": topic_filter, "id": frame_id}
            since = self._last[topic_filter]
            if since is None:
                since = fallback
            if since is not None:
                frame["since"] = since
            await ws.send(json.dumps(frame))
        if not pending:
            self._subscribed = True
            self._ready.set()
        async for raw in ws:
            frame = json.loads(raw)
            action = frame.get("action")
            if action == "message":
                await self._deliver(Message.from_frame(frame))
            elif action == "ack":
                if pending.pop(_frame_id(frame), None) is not None and not pending:
                    self._subscribed = True
                    self._ready.set()
            elif action == "token_expiring":
                token = await self._tokens.get(force=True)
                await ws.send(json.dumps({"action": "auth", "token": token.token, "id": next(self._ids)}))
            elif action == "gap":
                gap = Gap(str(frame.get("topic")), int(frame["requested_seq"]), int(frame["first_available_seq"]))
                self.gaps.append(gap)
                if self._on_gap is not None:
                    self._on_gap(gap)
                await self._items.put(gap)
            elif action == "error":
                error = error_from_body(int(frame.get("code", 500)), frame)
                if _frame_id(frame) in pending:
                    raise error  # a filter the gateway refused (403, 400...): stop for good
                log.warning("flowgate subscription: %s", error)

    def _resume_hint(self) -> int | None:
        """Where a filter that has not delivered anything yet resumes: after the newest seq seen at all."""
        return self.last_seq

    async def _deliver(self, message: Message) -> None:
        short = message.topic
        for topic_filter in self._filters:
            if topic_matches(self._short(topic_filter), short):
                last = self._last[topic_filter]
                if last is None or message.seq > last:
                    self._last[topic_filter] = message.seq
        if self.last_seq is None or message.seq > self.last_seq:
            self.last_seq = message.seq
        if message.seq in self._seen:
            return
        self._seen.add(message.seq)
        self._seen_order.append(message.seq)
        if len(self._seen_order) > SEEN_WINDOW:
            self._seen.discard(self._seen_order.popleft())
        await self._items.put(message)


def _frame_id(frame: dict[str, Any]) -> int:
    value = frame.get("id")
    return value if isinstance(value, int) else -1
