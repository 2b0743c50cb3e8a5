"""Publish frames written straight into nats-py's outgoing buffer, without a coroutine per message.

``Client.publish`` is a chain of three coroutines that validates the subject,
encodes the header dict key by key and formats the command with an f-string,
for every message. The gateway's messages carry a handful of distinct header
sets (``Fg-Type`` and ``Fg-QoS``), and its subjects are built by
``gateway.topics``, valid by construction. ``OutgoingFrames`` keeps each header
set's encoded block, and ``append`` adds one ``HPUB`` command (built by
``gateway.bus.core.Outlet``) to the client's pending buffer and wakes nats-py's
flusher task exactly as ``Client.publish`` does (``natspy.append``), so both kinds of publish share
one ordered buffer and one writer.
"""

from __future__ import annotations

from gateway.bus.natspy import append, drain
from gateway.payload import KIND_HEADER

_HEADER_LINE = b"NATS/1.0\r\n"
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
HEADER_BLOCK_CACHE = 64

__all__ = ["HEADER_BLOCK_CACHE", "OutgoingFrames", "append"]


class OutgoingFrames:
    """Encodes and queues ``HPUB`` commands on one nats-py client."""

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        self._blocks: dict[tuple[str | None, tuple[tuple[str, str], ...]], bytes] = {}

    def header_block(self, kind: str | None, headers: dict[str, str] | None, msg_id: str | None = None) -> bytes:
        """The encoded headers of a payload of ``kind`` (``None``: not classified, no ``Fg-Type``; readers
        classify it) plus ``headers``; a message id is appended per message."""
        key = (kind, tuple(headers.items()) if headers else ())
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) >= HEADER_BLOCK_CACHE:
                self._blocks.clear()
            fields = {**(headers or {}), KIND_HEADER: kind} if kind is not None else dict(headers or {})
            block = self._blocks[key] = _HEADER_LINE + b"".join(
                f"{name}: {value.strip().translate(_NEWLINES)}\r\n".encode() for name, value in fields.items()
            )
        if msg_id is None:
            return block + b"\r\n"
        return block + b"Nats-Msg-Id: " + msg_id.strip().translate(_NEWLINES).encode() + b"\r\n\r\n"

    drain = staticmethod(drain)  # force the pending buffer out, as nats-py does when a publish overfills it
