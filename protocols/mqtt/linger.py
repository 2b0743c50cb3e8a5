"""Lingering close of MQTT over TCP: the last packets reach a client that is still sending.

When the gateway closes a connection (a DISCONNECT with its reason code, a
CONNACK refusing the CONNECT), the client may still be sending. Closing the
socket with those bytes unread makes the kernel answer with a RST, and a RST
makes the client drop what it had not read yet: the DISCONNECT already on the
wire is lost and the client sees "connection reset". So, as web servers do,
``LingeringWire.close`` shuts the write side down after the last bytes (a FIN),
then keeps reading and discarding what the client sends until it closes,
``LINGER_QUIET`` seconds pass with nothing from it (then most likely nothing is
unread or on its way, and the close sends no RST; an idle client that does not
close holds nothing up for long), or ``LINGER`` seconds in all, and only then
closes. A client that closed first is closed at once. A TLS transport cannot
half-close and needs none of this: its own close already lingers (it sends
close_notify, then reads and discards until the client's close_notify, up to
its SSL shutdown timeout), so it is closed at once as before. ``Lingering``
keeps one listener's wires that linger, so that shutdown waits for them (at
most ``LINGER``). MQTT over WebSocket closes through the WebSocket close
handshake instead (``websocket.py``).
"""

from __future__ import annotations

import asyncio

LINGER = 2.0  # seconds a connection the server closed keeps reading (and discarding) what its client still sends
LINGER_QUIET = 0.5  # ... and closes sooner once its client has sent nothing for this long


class LingeringWire:
    """The ``Wire`` of one TCP or TLS connection (``server._TcpProtocol``): ``close`` lingers on TCP."""

    __slots__ = ("_deadline", "_last_rx", "_lingering", "_peer_closed", "_timer", "_transport", "closed")

    def __init__(self, transport: asyncio.Transport, lingering: Lingering) -> None:
        self._transport = transport
        self._lingering = lingering
        self.closed = False  # by the server: nothing more is written; what arrives is read and dropped, never decoded
        self._peer_closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = self._last_rx = 0.0  # the loop's time: when lingering ends, when the client last sent

    def write(self, data: bytes) -> None:
        if not self.closed:  # (a late acknowledgement after close: no write may follow write_eof)
            self._transport.write(data)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def close(self) -> None:
        """After the last write: a FIN, then discard until EOF, a quiet ``LINGER_QUIET`` or ``LINGER``; then
        close (a TLS transport, which cannot half-close, at once: its close_notify exchange lingers)."""
        if self.closed:
            return
        self.closed = True
        transport = self._transport
        if self._peer_closed or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # after what is still buffered
        transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._deadline = self._last_rx + LINGER
        self._timer = loop.call_at(self._last_rx + LINGER_QUIET, self._check)
        self._lingering.add(self)

    def discarded(self) -> None:
        """Bytes arrived after the server closed (``_TcpProtocol`` dropped them): the client is still sending."""
        self._last_rx = asyncio.get_running_loop().time()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        ends = min(self._last_rx + LINGER_QUIET, self._deadline)
        if loop.time() >= ends:
            self._timer = None
            self._transport.close()  # connection_lost follows: peer_closed
        else:
            self._timer = loop.call_at(ends, self._check)

    def peer_closed(self) -> None:
        """EOF from the client, or the connection is gone: nothing more to wait for (the transport closes)."""
        self._peer_closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lingering.discard(self)


class Lingering:
    """The wires of one listener that linger after the server closed them: shutdown waits for them."""

    def __init__(self) -> None:
        self._wires: dict[LingeringWire, asyncio.Future[None]] = {}

    def add(self, wire: LingeringWire) -> None:
        self._wires[wire] = asyncio.get_running_loop().create_future()

    def discard(self, wire: LingeringWire) -> None:
        done = self._wires.pop(wire, None)
        if done is not None:
            done.set_result(None)

    async def wait(self) -> None:
        """Until every lingering wire has closed: at most ``LINGER`` (each one's own timer closes it by then)."""
        if self._wires:
            await asyncio.wait(list(self._wires.values()), timeout=LINGER)
