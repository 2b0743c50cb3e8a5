"""Queue messages as the engine takes and gives them, and how they travel in NATS headers.

Headers of a stored queue message: ``Fg-Type`` (payload kind), ``Fg-Msg-Id``
(the SQS-style message id), ``Fg-Attrs`` (message attributes, base64url JSON,
only when there are any), ``Fg-Attr-Types`` (the SQS data types that are not
``String``, same encoding, only when there are any), ``Fg-Sender`` (the sending
user), ``Fg-Trace`` (an SQS ``AWSTraceHeader``), ``Fg-Sent-At`` (ms; set when a
message was moved, so that it keeps its original send time) and
``Fg-Not-Before`` (ms; delayed sends).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.payload import Payload

MSG_ID_HEADER = "Fg-Msg-Id"
ATTRS_HEADER = "Fg-Attrs"
SENT_AT_HEADER = "Fg-Sent-At"
NOT_BEFORE_HEADER = "Fg-Not-Before"
TYPES_HEADER = "Fg-Attr-Types"
SENDER_HEADER = "Fg-Sender"
TRACE_HEADER = "Fg-Trace"

PROTOCOL = "queue"  # the metrics and billing label of queue operations
MAX_ATTRIBUTES = 10
MAX_BATCH = 10
_ATTR_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def validate_attributes(value: Any) -> dict[str, str]:
    """Message attributes: at most 10 names of ``[A-Za-z0-9_.-]`` with string values."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise BadRequest(f"attributes must be an object of at most {MAX_ATTRIBUTES} string values")
    for name, item in value.items():
        if not _ATTR_NAME.fullmatch(name):
            raise BadRequest(f"attribute name {name[:40]!r} must be 1-256 characters of A-Z a-z 0-9 _ . -")
        if not isinstance(item, str):
            raise BadRequest(f"attribute {name!r} must be a string")
    return dict(value)


def validate_entry_ids(ids: list[Any]) -> list[str]:
    """Batch entry ids: 1-80 characters of ``[A-Za-z0-9_-]``, distinct within the batch."""
    for entry_id in ids:
        if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
            raise BadRequest("each batch entry needs an id of 1-80 characters of A-Z a-z 0-9 _ -")
    if len(set(ids)) != len(ids):
        raise BadRequest("batch entry ids must be distinct")
    return ids


def encode_attributes(attributes: Mapping[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(dict(attributes))).decode("ascii")


def decode_attributes(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class SendEntry:
    payload: Payload
    delay_seconds: int | None = None  # None: the queue's delay_seconds
    attributes: dict[str, str] = field(default_factory=dict)
    attribute_types: dict[str, str] = field(default_factory=dict)  # SQS data types other than String
    trace_header: str | None = None  # SQS's AWSTraceHeader system attribute
    group_id: str | None = None  # FIFO queues: the message group
    deduplication_id: str | None = None  # FIFO queues: None with content-based deduplication

    @property
    def size(self) -> int:
        """What counts against ``max_message_bytes``: the body plus attribute names, types and values."""
        extra = sum(len(k.encode()) + len(v.encode()) for k, v in self.attributes.items())
        types = sum(len(self.attribute_types.get(k, "String")) for k in self.attributes) if self.attribute_types else 0
        return len(self.payload.body) + extra + types


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: str
    md5_of_body: str
    seq: int
    delayed: bool
    sequence_number: str | None = None  # FIFO queues


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    payload: Payload
    md5_of_body: str
    attributes: dict[str, str]
    receive_count: int
    sent_at_ms: int
    attribute_types: dict[str, str] = field(default_factory=dict)
    sender_id: str = ""
    trace_header: str | None = None
    group_id: str | None = None
    deduplication_id: str | None = None
    sequence_number: str | None = None
