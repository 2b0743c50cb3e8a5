"""The WebSocket codec without sockets or an event loop: frames in, commands out; server frames rendered."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest, Forbidden, PayloadTooLarge, RateLimited
from gateway.payload import Delivery, Kind, Payload
from gateway.topics import Namespace
from protocols.ws.protocol import (
    CLOSE_REASONS,
    Auth,
    CloseCode,
    Ping,
    Publish,
    Rejected,
    Subscribe,
    Unsubscribe,
    ack_frame,
    error_frame,
    max_frame_bytes,
    parse_frame,
    render_message,
)

LIMIT = max_frame_bytes(1024)

STORED_NS = int(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp() * 1e9)


def parse(frame: object) -> object:
    return parse_frame(orjson.dumps(frame), max_frame_bytes=LIMIT)


@pytest.mark.parametrize(
    ("frame", "command"),
    [
        ({"action": "subscribe", "topic": "notifications"}, Subscribe(None, "notifications")),
        ({"action": "subscribe", "topic": "a/+", "since": 0, "id": 7}, Subscribe(7, "a/+", 0)),
        ({"action": "unsubscribe", "topic": "a/#", "id": "x"}, Unsubscribe("x", "a/#")),
        ({"action": "ping"}, Ping(None)),
        ({"action": "auth", "token": "t.t.t", "id": 1}, Auth(1, "t.t.t")),
        (
            {"action": "publish", "topic": "t", "message": "Hello World!"},
            Publish(None, "t", Payload(b"Hello World!", Kind.TEXT)),
        ),
        (
            {"action": "publish", "topic": "t", "message": {"n": 1}, "id": 3, "idempotency_key": "k"},
            Publish(3, "t", Payload(b'{"n":1}', Kind.JSON), "k"),
        ),
        ({"action": "publish", "topic": "t", "message": None}, Publish(None, "t", Payload(b"null", Kind.JSON))),
    ],
)
def test_valid_frames_become_commands(frame: object, command: object) -> None:
    assert parse(frame) == command


@pytest.mark.parametrize(
    ("raw", "frame_id", "fragment"),
    [
        (b"not json", None, "JSON objects"),
        (b"[1, 2]", None, "JSON objects"),
        (b'"subscribe"', None, "JSON objects"),
        (b"{}", None, "needs an 'action'"),
        (b'{"action": "dance", "id": 4}', 4, "unknown action 'dance'"),
        (b'{"action": "subscribe", "id": "s"}', "s", "needs a 'topic'"),
        (b'{"action": "subscribe", "topic": ""}', None, "needs a 'topic'"),
        (b'{"action": "subscribe", "topic": 5}', None, "needs a 'topic'"),
        (b'{"action": "subscribe", "topic": "a", "since": -1}', None, "since"),
        (b'{"action": "subscribe", "topic": "a", "since": "3"}', None, "since"),
        (b'{"action": "subscribe", "topic": "a", "since": true}', None, "since"),
        (b'{"action": "publish", "topic": "a"}', None, "needs a 'message'"),
        (b'{"action": "publish", "topic": "a", "message": 1, "idempotency_key": 2}', None, "idempotency_key"),
        (b'{"action": "auth", "id": 9}', 9, "needs a 'token'"),
        (b'{"action": "ping", "id": {"x": 1}}', None, "id must be"),
        (b'{"action": "ping", "id": true}', None, "id must be"),
    ],
)
def test_malformed_frames_are_rejected_with_400(raw: bytes, frame_id: object, fragment: str) -> None:
    result = parse_frame(raw, max_frame_bytes=LIMIT)
    assert isinstance(result, Rejected)
    assert result.id == frame_id
    assert isinstance(result.error, BadRequest)
    assert fragment in result.error.message


def test_oversized_frame_is_rejected_before_parsing() -> None:
    result = parse_frame(b"{" + b" " * LIMIT + b"}", max_frame_bytes=LIMIT)
    assert isinstance(result, Rejected)
    assert isinstance(result.error, PayloadTooLarge)
    assert result.error.status == 413


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_parser_never_raises(data: bytes | str) -> None:
    result = parse_frame(data, max_frame_bytes=LIMIT)
    assert isinstance(result, Rejected | Subscribe | Unsubscribe | Publish | Ping | Auth)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(JSON)
def test_any_json_message_keeps_its_value(value: object) -> None:
    result = parse({"action": "publish", "topic": "t", "message": value})
    assert isinstance(result, Publish)
    if isinstance(value, str):
        assert result.payload == Payload(value.encode(), Kind.TEXT)
    else:
        assert result.payload.kind is Kind.JSON and orjson.loads(result.payload.body) == value


def delivery(payload: Payload, topic: str = "sensors/1") -> Delivery:
    return Delivery(7, Namespace("alice", "myapp"), topic, payload, STORED_NS)


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (Payload(b'{"t": 21.5}', Kind.JSON), {"data": {"t": 21.5}}),
        (Payload(b"[1,2]", Kind.JSON), {"data": [1, 2]}),
        (Payload("héllo".encode(), Kind.TEXT), {"data": "héllo"}),
        (Payload(b"\x00\xff", Kind.BINARY), {"data": "AP8=", "encoding": "base64"}),
    ],
)
def test_message_frame_keeps_the_payload_type(payload: Payload, fields: dict[str, object]) -> None:
    frame = orjson.loads(render_message(delivery(payload)))
    assert frame == {
        "action": "message",
        "topic": "sensors/1",
        **fields,
        "seq": 7,
        "published_at": "2026-01-02T03:04:05.678Z",
    }


def test_message_frame_is_rendered_once_per_delivery() -> None:
    calls = []

    def counting(d: Delivery) -> bytes:
        calls.append(d.seq)
        return render_message(d)

    d = delivery(Payload(b"x", Kind.TEXT))
    frames = {d.frame("ws", counting) for _ in range(100)}
    assert len(frames) == 1 and calls == [7]


def test_error_frames_carry_http_like_codes() -> None:
    assert orjson.loads(error_frame(Forbidden("no"), 5, topic="t")) == {
        "action": "error",
        "id": 5,
        "code": 403,
        "error": "forbidden",
        "message": "no",
        "topic": "t",
    }
    assert orjson.loads(error_frame(RateLimited("slow down", details={"retry_after": 2}))) == {
        "action": "error",
        "code": 429,
        "error": "rate_limited",
        "message": "slow down",
        "retry_after": 2,
    }
    assert orjson.loads(error_frame(PayloadTooLarge("big")))["code"] == 413


def test_ack_frame() -> None:
    assert orjson.loads(ack_frame("a", seq=3)) == {"action": "ack", "id": "a", "seq": 3}


def test_every_close_code_is_documented() -> None:
    assert set(CLOSE_REASONS) == set(CloseCode)
    assert CloseCode.SLOW_CONSUMER.value == 4008 and CloseCode.UNAUTHORIZED.value == 4401


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_direct_text_frames_match_the_websockets_serializer(size: int) -> None:
    from websockets.frames import Frame, Opcode

    from protocols.ws.transport import text_frames

    payloads = [b"a" * size, b'{"x":1}']
    expected = b"".join(Frame(Opcode.TEXT, p).serialize(mask=False, extensions=[]) for p in payloads)
    assert text_frames(payloads) == expected
