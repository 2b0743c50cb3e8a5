"""The WebSocket wire protocol, sans I/O: client frames in, typed commands out; server frames rendered.

Every frame is one JSON object in a text frame. Client → server::

    {"action": "subscribe", "topic": "sensors/+", "since"?: <seq>, "id"?: ...}
    {"action": "unsubscribe", "topic": ..., "id"?}
    {"action": "publish", "topic": ..., "message": <string or JSON>, "id"?, "idempotency_key"?}
    {"action": "ping", "id"?}
    {"action": "auth", "token": <JWT>, "id"?}

Server → client::

    {"action": "message", "topic": <short name>, "data": ..., "seq": N, "published_at": ...}
    {"action": "ack", "id", ...}          # only for a client frame that carried "id"
    {"action": "error", "id"?, "code": <HTTP-like status>, "error": <code name>, "message", "topic"?}
    {"action": "pong", "id"?}
    {"action": "gap", "topic", "requested_seq", "first_available_seq"}
    {"action": "token_expiring", "expires_at": <unix seconds>}

``parse_frame`` never raises: a frame it cannot use becomes a ``Rejected``
carrying the gateway error to answer with (and the frame's ``id`` when it could
be read). Nothing here awaits, reads a clock or touches a socket; the endpoint
(``protocols.ws.endpoint``) is the thin adapter that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from gateway.errors import BadRequest, FlowGateError, PayloadTooLarge
from gateway.payload import Delivery, Payload

MAX_ID_CHARS = 128
ID_TYPES = (str, int)

FRAME_NAME = "ws"  # the Delivery.frame cache key of a rendered message frame
FRAME_OVERHEAD = 64 * 1024  # room for the envelope and JSON escaping around a maximal message


def max_frame_bytes(max_message_bytes: int) -> int:
    """The largest client frame answered with anything but 413: a maximal message, JSON-escaped."""
    return max_message_bytes * 6 + FRAME_OVERHEAD


class CloseCode(IntEnum):
    """Every code the gateway closes a WebSocket with (the one table; see ``CLOSE_REASONS``)."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4008
    UNAUTHORIZED = 4401
    PAYMENT_REQUIRED = 4402
    FORBIDDEN = 4403


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "normal closure (the client closed)",
    CloseCode.MESSAGE_TOO_BIG: "a frame far beyond the 413 limit (6 x FLOWGATE_MAX_MESSAGE_BYTES + 1 MiB); reconnect",
    CloseCode.INTERNAL_ERROR: "unexpected server error, or no pong to the server's ping in time; reconnect",
    CloseCode.SERVICE_RESTART: "the server shuts down or restarts; reconnect (subscribe with since=<last seq> to resume)",
    CloseCode.TRY_AGAIN_LATER: "the message bus is unreachable right now; reconnect shortly",
    CloseCode.SLOW_CONSUMER: "slow consumer: the connection's outbound buffer was full; reconnect with since=<last seq>",
    CloseCode.UNAUTHORIZED: "missing, invalid, expired or revoked token, or the user was deleted (the reason says "
    "which); get a new token and reconnect",
    CloseCode.PAYMENT_REQUIRED: "quota and balance spent, or all the plan's connections open (billing guard); "
    "top up or close a connection, then reconnect",
    CloseCode.FORBIDDEN: "the user is disabled; reconnect once an admin enabled it again",
}


def close_code(exc: FlowGateError) -> CloseCode:
    """The close code of an error that ends a connection: 4401 deleted user or bad token, 4403 disabled user."""
    return _CLOSE_CODES.get(exc.status, CloseCode.INTERNAL_ERROR)


_CLOSE_CODES = {
    401: CloseCode.UNAUTHORIZED,
    402: CloseCode.PAYMENT_REQUIRED,
    403: CloseCode.FORBIDDEN,
    503: CloseCode.TRY_AGAIN_LATER,
}


def close_reason(text: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    raw = text.encode("utf-8")[:123]
    return raw.decode("utf-8", errors="ignore")


# -- client commands ---------------------------------------------------------------------------

FrameId = str | int | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: FrameId
    topic: str
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: FrameId
    topic: str


@dataclass(frozen=True, slots=True)
class Publish:
    id: FrameId
    topic: str
    payload: Payload
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: FrameId


@dataclass(frozen=True, slots=True)
class Auth:
    id: FrameId
    token: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that cannot be carried out: answer with ``error`` and keep the connection."""

    id: FrameId
    error: FlowGateError


Command = Subscribe | Unsubscribe | Publish | Ping | Auth


def parse_frame(data: str | bytes, *, max_frame_bytes: int) -> Command | Rejected:
    """The command of one client frame, or why it was rejected."""
    if len(data) > max_frame_bytes:
        return Rejected(None, PayloadTooLarge(f"frame is larger than {max_frame_bytes} bytes"))
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Rejected(None, BadRequest('frames must be JSON objects like {"action": "subscribe", "topic": ...}'))
    if not isinstance(frame, dict):
        return Rejected(None, BadRequest('frames must be JSON objects like {"action": "subscribe", "topic": ...}'))
    frame_id = frame.get("id")
    if frame_id is not None and (
        not isinstance(frame_id, ID_TYPES) or isinstance(frame_id, bool) or len(str(frame_id)) > MAX_ID_CHARS
    ):
        return Rejected(None, BadRequest(f"id must be a string or integer of at most {MAX_ID_CHARS} characters"))
    try:
        return _command(frame, frame_id)
    except FlowGateError as exc:
        return Rejected(frame_id, exc)


def _command(frame: dict[str, Any], frame_id: FrameId) -> Command:
    action = frame.get("action")
    if action == "publish":
        if "message" not in frame:
            raise BadRequest("publish needs a 'message' (a string or any JSON value)")
        key = frame.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise BadRequest("idempotency_key must be a string")
        return Publish(frame_id, _topic(frame), Payload.from_value(frame["message"]), key)
    if action == "subscribe":
        since = frame.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            raise BadRequest("since must be a stream sequence number (an integer >= 0)")
        return Subscribe(frame_id, _topic(frame), since)
    if action == "unsubscribe":
        return Unsubscribe(frame_id, _topic(frame))
    if action == "ping":
        return Ping(frame_id)
    if action == "auth":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("auth needs a 'token' (a JWT for the same user and app)")
        return Auth(frame_id, token)
    if not isinstance(action, str):
        raise BadRequest("every frame needs an 'action'")
    raise BadRequest(f"unknown action {action[:40]!r}: use subscribe, unsubscribe, publish, ping or auth")


def _topic(frame: dict[str, Any]) -> str:
    topic = frame.get("topic")
    if not isinstance(topic, str) or not topic:
        raise BadRequest(f"{frame['action']} needs a 'topic' (a non-empty string)")
    return topic


# -- server frames -----------------------------------------------------------------------------


def render_message(delivery: Delivery) -> bytes:
    """A message frame; rendered once per delivery and shared by every subscriber (``Delivery.frame``)."""
    return orjson.dumps(
        {
            "action": "message",
            "topic": delivery.topic,
            **delivery.payload.json_fields(),
            "seq": delivery.seq,
            "published_at": delivery.published_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
    )


def ack_frame(frame_id: FrameId, **fields: Any) -> bytes:
    return orjson.dumps({"action": "ack", "id": frame_id, **fields})


def error_frame(error: FlowGateError, frame_id: FrameId = None, **fields: Any) -> bytes:
    """The one mapping of a gateway error onto a WebSocket error frame."""
    body: dict[str, Any] = {"action": "error"}
    if frame_id is not None:
        body["id"] = frame_id
    body.update(code=error.status, error=error.code, message=error.message, **fields)
    for key, value in error.details.items():
        body.setdefault(key, value)
    return orjson.dumps(body)


def pong_frame(frame_id: FrameId) -> bytes:
    return orjson.dumps({"action": "pong"} if frame_id is None else {"action": "pong", "id": frame_id})


def gap_frame(topic: str, requested_seq: int, first_available_seq: int) -> bytes:
    return orjson.dumps(
        {
            "action": "gap",
            "topic": topic,
            "requested_seq": requested_seq,
            "first_available_seq": first_available_seq,
            "reason": "retention",
        }
    )


def token_expiring_frame(expires_at: int) -> bytes:
    return orjson.dumps({"action": "token_expiring", "expires_at": expires_at})
