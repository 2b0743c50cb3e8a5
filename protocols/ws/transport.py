"""uvicorn's WebSocket protocol plus a direct, batched frame writer for the ``/ws`` endpoint.

Through ASGI every ``websocket.send`` is its own ``transport.write``: one
syscall per frame per subscriber, which caps fan-out (see PERFORMANCE.md and
``bench/ws_fanout.py``). ``DirectProtocol`` is uvicorn's websockets-sansio
protocol (handshake, keepalive pings, close handshake all stay uvicorn's) that
also offers the application an ASGI scope extension, ``flowgate.direct``: a
``DirectWriter`` that writes a batch of text frames with one write, waits for
the socket to drain, and aborts a connection whose peer stopped reading.
Without the extension (another ASGI server, an in-process test client) the
endpoint falls back to plain ASGI sends.
"""

from __future__ import annotations

import struct
from typing import Any

from websockets.http11 import Request

try:  # uvicorn's module is internal: without it the gateway runs on plain "websockets-sansio"
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

EXTENSION = "flowgate.direct"

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81


def text_frames(payloads: list[bytes]) -> bytes:
    """Unmasked server text frames (RFC 6455 §5.2) for ``payloads``, concatenated."""
    parts: list[bytes] = []
    append = parts.append
    for payload in payloads:
        size = len(payload)
        if size < 126:
            append(_SHORT.pack(_FIN_TEXT, size))
        elif size < 65536:
            append(_MEDIUM.pack(_FIN_TEXT, 126, size))
        else:
            append(_LONG.pack(_FIN_TEXT, 127, size))
        append(payload)
    return b"".join(parts)


class DirectWriter:
    """Batched text frames straight onto one connection's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        p = self._protocol
        return not (p.close_sent or p.disconnected or p.transport.is_closing())

    async def drained(self) -> None:
        """Return once the transport's buffer is below its high-water mark (or the peer is gone)."""
        await self._protocol.writable.wait()

    def write(self, payloads: list[bytes]) -> None:
        """Write whole text frames in one go; nothing once the connection is closing."""
        if self.open:
            self._protocol.transport.write(text_frames(payloads))

    def abort(self) -> None:
        """Drop the TCP connection at once (a peer that no longer reads gets no close frame)."""
        self._protocol.transport.abort()


if WebSocketsSansIOProtocol is not None:

    class DirectProtocol(WebSocketsSansIOProtocol):
        """uvicorn's websockets-sansio protocol, offering the ``flowgate.direct`` extension."""

        def handle_connect(self, event: Request) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)  # set only when the handshake goes on to the app
            if scope is not None:
                scope["extensions"][EXTENSION] = DirectWriter(self)

    PROTOCOL_CLASS: type | str = DirectProtocol
else:  # pragma: no cover
    PROTOCOL_CLASS = "websockets-sansio"
