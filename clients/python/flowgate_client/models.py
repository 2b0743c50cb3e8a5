"""Typed values the client hands out: messages, gaps, publish results, tokens, queue messages."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a subscription.

    ``data`` keeps the type it was published with: ``str`` for text, any JSON value
    for JSON, ``bytes`` for binary (sent as base64 on the wire).
    """

    topic: str
    data: Any
    seq: int
    published_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Message:
        data = frame.get("data")
        if frame.get("encoding") == "base64" and isinstance(data, str):
            data = base64.b64decode(data)
        return cls(str(frame["topic"]), data, int(frame["seq"]), _timestamp(frame.get("published_at")), frame)

    @property
    def text(self) -> str:
        """The data as one line of text: strings as they are, anything else as JSON (bytes as base64)."""
        import json

        if isinstance(self.data, str):
            return self.data
        if isinstance(self.data, bytes):
            return base64.b64encode(self.data).decode()
        return json.dumps(self.data, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        data = base64.b64encode(self.data).decode() if isinstance(self.data, bytes) else self.data
        out: dict[str, Any] = {"topic": self.topic, "data": data, "seq": self.seq}
        if isinstance(self.data, bytes):
            out["encoding"] = "base64"
        out["published_at"] = self.raw.get("published_at")
        return out


@dataclass(frozen=True, slots=True)
class Gap:
    """Retention removed messages a resumed subscription asked for: ``requested_seq`` up to ``first_available_seq``."""

    topic: str
    requested_seq: int
    first_available_seq: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    topic: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Token:
    token: str
    expires_at: float
    user_id: str
    app: str
    topic_prefix: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Token:
        return cls(
            str(body["token"]),
            float(body["expires_at"]),
            str(body.get("user_id", "")),
            str(body.get("app", "")),
            str(body.get("topic_prefix", "")),
        )
