"""How a payload travels through the bus and how a stored message is presented.

A payload is bytes plus a kind, carried in the ``Fg-Type`` NATS header:

- ``json``: the bytes are a JSON document; JSON front-ends embed it unchanged.
- ``text``: UTF-8 text; JSON front-ends send it as a JSON string.
- ``binary``: anything else (typically MQTT); JSON front-ends send
  ``{"data": "<base64>", "encoding": "base64"}``.

MQTT subscribers always get the raw bytes. A ``Delivery`` is one stored message
as a subscriber sees it; frames rendered from it are cached on it so that a
message is serialised once per frame format, not once per subscriber.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from gateway.message_meta import MessageMeta, meta_of
from gateway.topics import Namespace

KIND_HEADER = "Fg-Type"
QOS_HEADER = "Fg-QoS"


class Kind(StrEnum):
    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


@dataclass(slots=True)
class Payload:
    """Bytes and their kind. Treat it as immutable: it is not frozen because a frozen
    dataclass takes twice as long to build, and one is built per message each way.

    A payload made by ``raw`` (an MQTT body) is classified the first time its
    ``kind`` is asked for, which only a JSON front-end does: MQTT to MQTT never
    pays for it. It travels without ``Fg-Type``, and a reader classifies it by
    the same rule (``from_bytes``).
    """

    body: bytes
    known_kind: Kind | None  # None: not classified yet
    meta: MessageMeta | None = None  # message properties (MQTT 5), from the ``Fg-Props`` header

    @property
    def kind(self) -> Kind:
        kind = self.known_kind
        if kind is None:
            kind = self.known_kind = _classify(self.body)
        return kind

    @classmethod
    def from_value(cls, value: Any) -> Payload:
        """A message given as JSON: a string stays text, any other value stays JSON."""
        if isinstance(value, str):
            return cls(value.encode("utf-8"), Kind.TEXT)
        return cls(orjson.dumps(value), Kind.JSON)

    @classmethod
    def from_bytes(cls, body: bytes) -> Payload:
        """Raw bytes (MQTT), classified now: a JSON object or array is JSON, other UTF-8 is text, the rest binary."""
        return cls(body, _classify(body))

    @classmethod
    def raw(cls, body: bytes) -> Payload:
        """Raw bytes, classified as ``from_bytes`` does when (if ever) ``kind`` is asked for."""
        return cls(body, None)

    @classmethod
    def from_headers(cls, body: bytes, headers: dict[str, str] | None) -> Payload:
        kind = (headers or {}).get(KIND_HEADER)
        meta = meta_of(headers)
        try:
            return cls(body, Kind(kind), meta) if kind else cls(body, None, meta)
        except ValueError:
            return cls(body, Kind.BINARY, meta)

    @property
    def headers(self) -> dict[str, str]:
        return {KIND_HEADER: self.kind.value}

    def json_fields(self) -> dict[str, Any]:
        """The ``data`` (and ``encoding``, and ``properties`` when the message has any) fields of a JSON frame."""
        fields: dict[str, Any]
        if self.kind is Kind.JSON:
            fields = {"data": orjson.Fragment(self.body)}
        elif self.kind is Kind.TEXT:
            fields = {"data": self.body.decode("utf-8", errors="replace")}
        else:
            fields = {"data": base64.b64encode(self.body).decode("ascii"), "encoding": "base64"}
        if self.meta is not None:
            properties = self.meta.public_fields()
            if properties:
                fields["properties"] = properties  # MQTT 5 message properties (gateway/message_meta.py)
        return fields


def _classify(body: bytes) -> Kind:
    """JSON for a JSON object or array, text for other UTF-8, binary for the rest."""
    if not body.isascii():  # ASCII is UTF-8: nothing to decode
        # No exception for the common binary case: invalid UTF-8 decodes to more replacement
        # characters than the body spells out (U+FFFD is EF BF BD, which nothing else can absorb).
        text = body.decode("utf-8", "replace")
        if "\ufffd" in text and text.count("\ufffd") != body.count(b"\xef\xbf\xbd"):
            return Kind.BINARY
    # JSON's whitespace is ASCII; any other leading character makes orjson refuse it anyway.
    first = body.lstrip()[:1]
    if first == b"{" or first == b"[":
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            return Kind.JSON
    return Kind.TEXT


@dataclass(slots=True)
class Delivery:
    """One stored message as delivered to subscribers."""

    seq: int
    namespace: Namespace
    topic: str
    payload: Payload
    stored_ns: int  # when JetStream stored it, nanoseconds since the epoch (``published_at`` on demand)
    qos: int = 1  # the MQTT publish QoS (``Fg-QoS`` header); other protocols' messages count as QoS 1
    _frames: dict[str, bytes] | None = field(default=None, repr=False)  # made on the first frame rendered
    trace: str | None = field(default=None, repr=False)  # the publish's W3C traceparent, when tracing is on

    @property
    def published_at(self) -> datetime:
        return datetime.fromtimestamp(self.stored_ns / 1e9, UTC)

    def frame(self, name: str, render: Callable[[Delivery], bytes]) -> bytes:
        """Render this delivery once per frame format and reuse it for every subscriber."""
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        cached = frames.get(name)
        if cached is None:
            cached = frames[name] = render(self)
        return cached
