"""``to_delivery``: a stream message's position, payload kind and QoS read without nats-py's ``Msg.metadata``."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from gateway.bus.subscriptions import _position, to_delivery
from gateway.payload import Delivery, Kind, Payload
from gateway.topics import Namespace

REPLIES = [
    "$JS.ACK.FG_MESSAGES.c1.1.42.7.1732571234123456789.3",  # v1
    "$JS.ACK._.ACCHASH.FG_MESSAGES.c1.1.42.7.1732571234123456789.3.r4nd",  # v2
    "$JS.ACK.hub.ACCHASH.FG_MESSAGES.c1.2.42.7.1732571234123456789.0",  # v2 without the random token
]


@pytest.mark.parametrize("reply", REPLIES)
def test_position_matches_nats_py_metadata(reply: str) -> None:
    meta = Msg(None, subject="x", reply=reply).metadata  # type: ignore[arg-type]
    seq, stored_ns = _position(reply)
    assert seq == meta.sequence.stream
    delivery = Delivery(seq, Namespace("u1", "app"), "t", Payload(b"", Kind.TEXT), stored_ns)
    assert delivery.published_at == meta.timestamp


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.ACK.too.short"])
def test_position_rejects_other_subjects(reply: str) -> None:
    with pytest.raises(ValueError):
        _position(reply)


@pytest.mark.parametrize(
    ("headers", "kind", "qos"),
    [
        ({"Fg-Type": "json", "Fg-QoS": "0"}, Kind.JSON, 0),
        ({"Fg-Type": "binary", "Fg-QoS": "2"}, Kind.BINARY, 2),
        ({"Fg-Type": "bogus", "Fg-QoS": "7"}, Kind.BINARY, 1),
        ({"Fg-Type": "text"}, Kind.TEXT, 1),
        (None, Kind.TEXT, 1),
    ],
)
def test_to_delivery_reads_kind_and_qos(headers: dict[str, str] | None, kind: Kind, qos: int) -> None:
    msg = Msg(None, subject="fg.msg.u1.app.a.b", reply=REPLIES[0], data=b"hello", headers=headers)  # type: ignore[arg-type]
    delivery = to_delivery(msg)
    assert (delivery.seq, delivery.topic, delivery.namespace.user_id) == (42, "a/b", "u1")
    assert (delivery.payload.kind, delivery.payload.body, delivery.qos) == (kind, b"hello", qos)
