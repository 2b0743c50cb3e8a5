"""The reader of one MQTT connection: bytes in, through the session, its actions carried out in order.

``data_received`` feeds the decoder; each packet goes to ``MqttSession.receive``
once. While the reader task waits idle with nothing queued, that happens in the
transport callback and what needs no waiting is done at once (the PUBLISH and
PUBACK fast path is the same table lookup); everything else queues in a short
inbox the reader works through, awaiting what needs the gateway. Reading from
the socket pauses when the inbox fills or the client is rate limited.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NoReturn

from protocols.mqtt.actions import (
    Action,
    Close,
)
from protocols.mqtt.close_causes import CloseCause, closing
from protocols.mqtt.codec import MQTTProtocolError
from protocols.mqtt.host import ConnectionHost
from protocols.mqtt.session import Result

INBOX_HIGH = 256  # packets parsed but not yet handled: pause reading above this
INBOX_LOW = 32
MAX_PENDING_ACKS = 2048  # publishes sent to JetStream and not yet acknowledged, per connection
SLICE = 100  # packets data_received handles at once; the rest in the next event-loop iteration
READ_AHEAD = 1 << 20  # bytes received and not yet decoded: stop reading above this
YIELD_EVERY = 256  # packets handled in a row before the reader lets other tasks run


@dataclass(frozen=True, slots=True)
class Malformed(Action):
    """The decoder rejected the bytes: handled in order, after the packets that came before it [MQTT-4.8.0-1]."""

    reason: str
    code: int


class Closing(Exception):
    """Internal: stop handling packets; the reason is already recorded."""


class Inbound(ConnectionHost):
    """The reader: bytes to the session, its actions carried out in order; pause and resume reading."""

    def data_received(self, data: bytes) -> None:
        if self._close_reason is not None or self._peer_gone:
            return
        self._last_rx = self._loop.time()
        decoder = self._decoder
        decoder.feed(data)
        if decoder.buffered > READ_AHEAD and not self._reading_paused:
            self._reading_paused = True  # slices fall behind the socket: let TCP hold the rest
            self.wire.pause_reading()
        self._take(SLICE)

    def _take_more(self) -> None:
        if self._close_reason is None and not self._peer_gone:
            self._take(SLICE)

    def _take(self, limit: int) -> None:
        """Hand the decoded packets to the session, at most ``limit`` at once (-1: all of them)."""
        decoder = self._decoder
        inbox = self._inbox
        session = self.session
        now = self._now
        handled = 0
        try:
            while (packet := decoder.next_packet()) is not None:
                # Handed to the session here only while the reader waits idle with nothing queued, so packets
                # are still handled one at a time and in order [MQTT-4.6.0-2].
                if (
                    inbox
                    or not self._idle
                    or self._close_reason is not None
                    or self._throttled
                    or self._overfull
                    or len(self._acks) >= MAX_PENDING_ACKS
                ):
                    inbox.append(packet)
                else:  # ``session.receive`` inlined: one table lookup, and at once what needs no waiting
                    handler = session.row.get(type(packet))  # (the PUBLISH/PUBACK fast path is this lookup)
                    result = session.violation(packet) if handler is None else handler(packet)
                    if result is not None and ((run := now.get(type(result))) is None or not run(result)):
                        self._apply_rest(result)
                    handled += 1
                    if handled == limit:
                        # The rest in the next iteration: this slice's publishes go to the bus first, so
                        # JetStream stores them while the next slice is handled, not after the whole read.
                        self._loop.call_soon(self._take_more)
                        break
            else:  # all taken
                if self._reading_paused and len(inbox) <= INBOX_LOW and not self._throttled:
                    self._reading_paused = False
                    self.wire.resume_reading()
        except MQTTProtocolError as exc:
            inbox.append(Malformed(exc.reason, exc.reason_code))
        if inbox:
            self._wake.set()
            if len(inbox) >= INBOX_HIGH and not self._reading_paused:
                self._reading_paused = True
                self.wire.pause_reading()

    def connection_lost(self) -> None:
        """The peer closed or the network failed: finish the packets already received, then clean up."""
        if self._close_reason is None and not self._peer_gone:
            self._take(-1)  # what a slice left in the decoder, before the reader sees the peer gone
        self._peer_gone = True
        self._wake.set()

    def abort(self, cause: CloseCause, reason: str) -> None:
        """Close from the server side (takeover, expiry, overflow, shutdown): ``cause`` decides the will and
        MQTT 5's DISCONNECT (``close_causes.py``)."""
        self._abort(closing(cause, reason))

    def _abort(self, close: Close) -> None:
        """``abort``, or the session's ``Close`` from a callback: the first reason to close wins."""
        if self._close_reason is not None:
            return
        self._close_reason = close.reason
        self._disconnect_code = close.code
        self._publish_will = close.will
        self._inbox.clear()
        self._wake.set()

    def _apply_rest(self, result: Action | list[Action]) -> None:
        """What ``data_received`` could not do at once: a list action by action, what waits queued for the reader."""
        if not isinstance(result, list):
            self._inbox.append(result)
            return
        for index, action in enumerate(result):
            run = self._now.get(type(action))
            if run is None or not run(action):
                self._inbox.extend(result[index:])
                return

    async def _apply(self, result: Result) -> None:
        """The reader's way: each action at once if it can be, else awaited."""
        if result is None:
            return
        for action in result if isinstance(result, list) else (result,):
            run = self._now.get(type(action))
            if run is None or not run(action):
                await self._later[type(action)](action)

    def _apply_soon(self, result: Result) -> None:
        """From a callback (store answers, timers): as ``_apply``, but at once, and a close is an ``abort``."""
        if result is None:
            return
        for action in result if isinstance(result, list) else (result,):
            if isinstance(action, Close):  # (keepalive, receive maximum, a message not stored: each has a code)
                self._abort(action)
            else:
                self._now[type(action)](action)

    async def _serve(self) -> None:
        inbox = self._inbox
        session = self.session
        now = self._now
        handled = 0
        while True:
            if self._close_reason is not None:
                return
            if not inbox:
                if self._peer_gone:
                    self._abort(closing(CloseCause.CONNECTION_LOST, "connection lost"))
                    return
                self._wake.clear()
                self._idle = True  # data_received may hand packets to the session itself
                try:
                    await self._wake.wait()
                finally:
                    self._idle = False
                if self._overfull or len(self._acks) >= MAX_PENDING_ACKS:
                    await self._settle()  # after publishes data_received handled
                continue
            item = inbox.popleft()
            if self._reading_paused and len(inbox) <= INBOX_LOW and not self._throttled:
                self._reading_paused = False
                self.wire.resume_reading()
            if isinstance(item, Action):
                await self._apply(item)
            else:  # ``session.receive`` and ``_apply`` inlined (a burst of PUBACKs comes this way): no coroutine
                handler = session.row.get(type(item))  # for what is done at once, as in data_received
                result = session.violation(item) if handler is None else handler(item)
                if result is not None:
                    run = now.get(type(result))
                    if run is None:
                        await self._apply(result)  # a list, or an action that waits
                    elif not run(result) and isinstance(result, Action):  # (lists have no executor)
                        await self._later[type(result)](result)
            if self._overfull or len(self._acks) >= MAX_PENDING_ACKS:
                await self._settle()
            handled += 1
            if handled % YIELD_EVERY == 0:
                # Let the bus flush what was sent and take in acknowledgements while a burst is handled,
                # so storing overlaps with reading instead of alternating with it.
                await asyncio.sleep(0)

    def _fail(self, cause: CloseCause, reason: str) -> NoReturn:
        """Close from the reader: stop handling packets; ``cause`` decides as for ``abort``."""
        self._stop(closing(cause, reason))

    def _stop(self, close: Close) -> NoReturn:
        """``_fail``, or the session's ``Close``: an earlier reason and DISCONNECT code stay, the will is this one's."""
        if self._close_reason is None:
            self._disconnect_code = close.code
        self._close_reason = self._close_reason or close.reason
        self._publish_will = close.will
        raise Closing

    async def _throttle(self, seconds: float) -> None:
        """Stop reading from this client for ``seconds`` (rate limited), then go on."""
        self._throttled = True
        if not self._reading_paused:
            self._reading_paused = True
            self.wire.pause_reading()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._throttled = False
        if self._close_reason is not None:
            raise Closing
        if self._reading_paused and len(self._inbox) <= INBOX_LOW:
            # _serve resumes only when it takes a packet: with the inbox empty it would wait forever
            self._reading_paused = False
            self.wire.resume_reading()

    async def _settle(self) -> None:
        """Wait while the bus's outgoing buffer is overfull or too many publishes await their acknowledgement."""
        if self._overfull:
            self._overfull = False
            await self.ctx.services.bus.drain()
        if len(self._acks) >= MAX_PENDING_ACKS:
            self._acks_drained.clear()
            await self._acks_drained.wait()
