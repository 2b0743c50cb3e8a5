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

What this relies on in uvicorn's internal class, and since which release:
``WebSocketsSansIOProtocol`` (0.35.0), its keepalive pings for
``ws_ping_interval`` (0.44.0), ``handle_connect(Request)`` setting ``self.scope``
with an ``extensions`` dict, the ``transport``, ``close_sent`` and ``writable``
attributes, and, since 0.52.1, ``disconnected`` and ``connection_lost`` setting
``writable`` so a ``drained()`` waiting on a paused socket returns when the peer
goes (before it, a reader paused in ``_publish`` never saw the disconnect).
``UVICORN_TESTED`` is the range pyproject.toml pins; ``uvicorn_problems`` says
what an installed uvicorn lacks (tests/test_ws_transport_seam.py).
"""

from __future__ import annotations

import inspect
import struct
from importlib.metadata import version
from typing import Any

from websockets.http11 import Request

try:  # uvicorn's module is internal: without it the gateway runs on plain "websockets-sansio"
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

EXTENSION = "flowgate.direct"
UVICORN_TESTED = ((0, 52, 1), (0, 56))  # >= first release with all of the above, < the next minor after tested
_ATTRIBUTES = ("transport", "close_sent", "disconnected", "writable", "ping_interval", "conn")

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


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def uvicorn_problems() -> list[str]:
    """What the installed uvicorn lacks of what ``DirectProtocol`` relies on (empty: all there)."""
    installed = version("uvicorn")
    low, high = UVICORN_TESTED
    problems = []
    if not low <= _release(installed) < high:
        problems.append(
            f"uvicorn {installed} is outside the tested range >={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        )
    if WebSocketsSansIOProtocol is None:
        return [*problems, f"uvicorn {installed} has no uvicorn.protocols.websockets.websockets_sansio_impl"]
    source = inspect.getsource(WebSocketsSansIOProtocol)
    init = inspect.getsource(WebSocketsSansIOProtocol.__init__)
    problems += [
        f"WebSocketsSansIOProtocol.__init__ of uvicorn {installed} sets no {name!r}"
        for name in _ATTRIBUTES
        if f"self.{name}" not in init
    ]
    connect = inspect.signature(WebSocketsSansIOProtocol.handle_connect)
    if list(connect.parameters) != ["self", "event"]:
        problems.append(f"WebSocketsSansIOProtocol.handle_connect of uvicorn {installed} is {connect}")
    if "def start_keepalive" not in source:
        problems.append(f"uvicorn {installed}'s websockets-sansio sends no keepalive pings")
    lost = inspect.getsource(WebSocketsSansIOProtocol.connection_lost)
    if "self.writable.set()" not in lost:
        problems.append(f"uvicorn {installed} leaves writable cleared when a paused connection is lost")
    return problems


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
