"""A queue's attributes: defaults, limits (Amazon SQS's), validation and JSON form.

``QueueAttributes.updated`` applies a partial change (as sent to ``PUT
/api/v1/queues/{queue}``) and rejects unknown names and out-of-range values with
``BadRequest`` before anything is stored. ``fifo_queue`` can only be chosen
when a queue is made; ``extra`` keeps attributes the engine stores but does not
act on (an SQS ``Policy``, ``RedriveAllowPolicy``, KMS settings), name to text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

MAX_VISIBILITY_TIMEOUT = 43_200  # 12 hours
MAX_DELAY_SECONDS = 900
MAX_WAIT_SECONDS = 20
MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 1_209_600  # 14 days
MIN_MESSAGE_BYTES = 1024
DEFAULT_MESSAGE_BYTES = 262_144
MAX_RECEIVE_COUNT = 1000


def int_in(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` as an integer in ``[lo, hi]`` (JSON integers only, not booleans)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer between {lo} and {hi}")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    """Where a message goes after it was received more than ``max_receive_count`` times."""

    dead_letter_queue: str  # a short name in the same namespace
    max_receive_count: int

    @classmethod
    def from_json(cls, value: Any) -> RedrivePolicy | None:
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) != {"dead_letter_queue", "max_receive_count"}:
            raise BadRequest(
                'redrive_policy must be null or {"dead_letter_queue": <queue>, "max_receive_count": <1-1000>}'
            )
        dlq = value["dead_letter_queue"]
        if not isinstance(dlq, str) or not dlq:
            raise BadRequest("redrive_policy.dead_letter_queue must be a queue name")
        count = int_in(value["max_receive_count"], "redrive_policy.max_receive_count", 1, MAX_RECEIVE_COUNT)
        return cls(dlq, count)

    def to_json(self) -> dict[str, Any]:
        return {"dead_letter_queue": self.dead_letter_queue, "max_receive_count": self.max_receive_count}


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    visibility_timeout: int = 30
    message_retention_seconds: int = 345_600  # 4 days
    delay_seconds: int = 0
    receive_wait_seconds: int = 0
    max_message_bytes: int = DEFAULT_MESSAGE_BYTES
    redrive_policy: RedrivePolicy | None = None
    fifo_queue: bool = False
    content_based_deduplication: bool = False
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def default(cls, max_message_bytes: int) -> QueueAttributes:
        """The defaults, with the size limit capped at the gateway's own."""
        return cls(max_message_bytes=min(DEFAULT_MESSAGE_BYTES, max_message_bytes))

    def updated(self, changes: Mapping[str, Any], *, max_message_bytes: int) -> QueueAttributes:
        """These attributes with ``changes`` applied; ``BadRequest`` names the first invalid one."""
        if not isinstance(changes, Mapping):
            raise BadRequest("attributes must be a JSON object")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise BadRequest(f"unknown attribute(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        limits = {
            "visibility_timeout": (0, MAX_VISIBILITY_TIMEOUT),
            "message_retention_seconds": (MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS),
            "delay_seconds": (0, MAX_DELAY_SECONDS),
            "receive_wait_seconds": (0, MAX_WAIT_SECONDS),
            "max_message_bytes": (min(MIN_MESSAGE_BYTES, max_message_bytes), max_message_bytes),
        }
        for name, value in changes.items():
            if name == "redrive_policy":
                values[name] = RedrivePolicy.from_json(value)
            elif name in ("fifo_queue", "content_based_deduplication"):
                if not isinstance(value, bool):
                    raise BadRequest(f"{name} must be true or false")
                values[name] = value
            elif name == "extra":
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise BadRequest("extra must be an object of strings")
                merged = {**dict(self.extra), **value}
                values[name] = tuple(sorted((k, v) for k, v in merged.items() if v != ""))  # "" removes one
            else:
                lo, hi = limits[name]
                values[name] = int_in(value, name, lo, hi)
        return dataclasses.replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        return {
            "visibility_timeout": self.visibility_timeout,
            "message_retention_seconds": self.message_retention_seconds,
            "delay_seconds": self.delay_seconds,
            "receive_wait_seconds": self.receive_wait_seconds,
            "max_message_bytes": self.max_message_bytes,
            "redrive_policy": None if self.redrive_policy is None else self.redrive_policy.to_json(),
            **(
                {"fifo_queue": True, "content_based_deduplication": self.content_based_deduplication}
                if self.fifo_queue
                else {}
            ),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> QueueAttributes:
        """Attributes as stored (already validated when they were set)."""
        policy = value.get("redrive_policy")
        return cls(
            visibility_timeout=int(value["visibility_timeout"]),
            message_retention_seconds=int(value["message_retention_seconds"]),
            delay_seconds=int(value["delay_seconds"]),
            receive_wait_seconds=int(value["receive_wait_seconds"]),
            max_message_bytes=int(value["max_message_bytes"]),
            redrive_policy=None if policy is None else RedrivePolicy(**policy),
            fifo_queue=bool(value.get("fifo_queue", False)),
            content_based_deduplication=bool(value.get("content_based_deduplication", False)),
            extra=tuple(sorted(dict(value.get("extra") or {}).items())),
        )
