"""Message properties that travel with a message across protocols (MQTT 5's, for now), in one NATS header.

An MQTT 5 publisher's Content Type, Payload Format Indicator, Response Topic,
Correlation Data, User Properties and Message Expiry Interval, plus which
connection published it (for No Local), are carried in the ``Fg-Props`` header
as compact JSON (ASCII only, so it is a valid NATS header value)::

    {"ct": "application/json", "pf": 1, "rt": "replies/1", "cd": "<base64>",
     "up": [["name", "value"], ...], "exp": 1767000000000, "o": "<connection id>", "r": 1}

``exp`` is the absolute expiry time in milliseconds since the epoch, so every
reader can tell the remaining lifetime of a message that waited in a stream.
Readers that do not know the header ignore it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

PROPS_HEADER = "Fg-Props"


@dataclass(frozen=True, slots=True)
class MessageMeta:
    content_type: str | None = None
    payload_format: int | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    expires_at: float | None = None  # seconds since the epoch
    origin: str | None = None  # the publishing connection (MQTT No Local)
    retain: bool = False  # published with RETAIN (MQTT Retain As Published)

    @property
    def bare(self) -> bool:
        """No message properties: only where the message came from (and its retain flag)."""
        return (
            self.content_type is None
            and self.payload_format is None
            and self.response_topic is None
            and self.correlation_data is None
            and not self.user_properties
            and self.expires_at is None
        )

    def to_header(self) -> str:
        fields: dict[str, Any] = {}
        if self.content_type is not None:
            fields["ct"] = self.content_type
        if self.payload_format is not None:
            fields["pf"] = self.payload_format
        if self.response_topic is not None:
            fields["rt"] = self.response_topic
        if self.correlation_data is not None:
            fields["cd"] = base64.b64encode(self.correlation_data).decode("ascii")
        if self.user_properties:
            fields["up"] = [list(pair) for pair in self.user_properties]
        if self.expires_at is not None:
            fields["exp"] = int(self.expires_at * 1000)
        if self.origin is not None:
            fields["o"] = self.origin
        if self.retain:
            fields["r"] = 1
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_header(cls, value: str) -> MessageMeta | None:
        """The meta a header spells, or ``None`` when it is not one we wrote (ignored, never an error)."""
        try:
            fields = json.loads(value)
            if not isinstance(fields, dict):
                return None
            cd = fields.get("cd")
            exp = fields.get("exp")
            return cls(
                content_type=_text(fields.get("ct")),
                payload_format=fields["pf"] if fields.get("pf") in (0, 1) else None,
                response_topic=_text(fields.get("rt")),
                correlation_data=base64.b64decode(cd, validate=True) if isinstance(cd, str) else None,
                user_properties=tuple((str(pair[0]), str(pair[1])) for pair in fields.get("up", ()) if len(pair) == 2),
                expires_at=exp / 1000 if isinstance(exp, int) else None,
                origin=_text(fields.get("o")),
                retain=fields.get("r") == 1,
            )
        except (ValueError, TypeError, KeyError):
            return None

    def public_fields(self) -> dict[str, Any]:
        """The properties as JSON front-ends show them (the ``properties`` field of a message)."""
        fields: dict[str, Any] = {}
        if self.content_type is not None:
            fields["content_type"] = self.content_type
        if self.payload_format is not None:
            fields["payload_format"] = self.payload_format
        if self.response_topic is not None:
            fields["response_topic"] = self.response_topic
        if self.correlation_data is not None:
            fields["correlation_data"] = base64.b64encode(self.correlation_data).decode("ascii")
        if self.user_properties:
            fields["user_properties"] = [list(pair) for pair in self.user_properties]
        if self.expires_at is not None:
            fields["expires_at"] = self.expires_at
        return fields


def meta_from_request(fields: object, now: float) -> MessageMeta:
    """The properties a JSON publisher gives (``"properties"`` of HTTP ``/publish``), checked; ``BadRequest`` if not.

    Same names as ``public_fields``, with ``message_expiry_interval`` (seconds) instead of ``expires_at``.
    """
    if not isinstance(fields, dict):
        raise BadRequest("properties must be an object")
    unknown = set(fields) - _REQUEST_FIELDS
    if unknown:
        raise BadRequest(f"unknown properties: {', '.join(sorted(unknown))}")
    strings = {name: fields.get(name) for name in ("content_type", "response_topic")}
    if any(value is not None and not isinstance(value, str) for value in strings.values()):
        raise BadRequest("content_type and response_topic must be strings")
    payload_format = fields.get("payload_format")
    if payload_format not in (None, 0, 1):
        raise BadRequest("payload_format must be 0 or 1")
    expiry = fields.get("message_expiry_interval")
    if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool) or not 0 < expiry < 2**32):
        raise BadRequest("message_expiry_interval must be whole seconds, 1..4294967295")
    pairs = fields.get("user_properties", [])
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise BadRequest("user_properties must be a list of [name, value] string pairs")
    correlation = fields.get("correlation_data")
    try:
        data = base64.b64decode(correlation, validate=True) if correlation is not None else None
    except (ValueError, TypeError):
        raise BadRequest("correlation_data must be base64") from None
    return MessageMeta(
        content_type=strings["content_type"],
        payload_format=payload_format,
        response_topic=strings["response_topic"],
        correlation_data=data,
        user_properties=tuple((p[0], p[1]) for p in pairs),
        expires_at=now + expiry if expiry is not None else None,
    )


_REQUEST_FIELDS = frozenset(
    {
        "content_type",
        "payload_format",
        "response_topic",
        "correlation_data",
        "user_properties",
        "message_expiry_interval",
    }
)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def meta_of(headers: dict[str, str] | None) -> MessageMeta | None:
    value = headers.get(PROPS_HEADER) if headers else None
    return MessageMeta.from_header(value) if value else None
