"""How raw bytes (MQTT payloads) are classified: JSON, text or binary (gateway.payload)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.payload import Kind, Payload


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", Kind.TEXT),
        (b"hello", Kind.TEXT),
        (b' {"a": 1}', Kind.JSON),
        (b"[1, 2]", Kind.JSON),
        (b"[1, 2", Kind.TEXT),  # looks like JSON, is not
        ("héllo wörld".encode(), Kind.TEXT),
        ("\ufffd is a character too".encode(), Kind.TEXT),
        (b"\xff\xfe\x00", Kind.BINARY),
        (b"\xe2\xef\xbf\xbd", Kind.BINARY),  # a broken sequence before a genuine U+FFFD
        (b"\xef\xbf\xbd\xc3", Kind.BINARY),  # a genuine U+FFFD before a truncated sequence
        (b"\x00\x00\x01\x8c" + b"x" * 96, Kind.BINARY),
    ],
)
def test_kinds(body: bytes, kind: Kind) -> None:
    assert Payload.from_bytes(body).kind is kind


# Bytes around the lead and continuation values of UTF-8, U+FFFD's own bytes among them.
_tricky = st.lists(
    st.sampled_from([0xEF, 0xBF, 0xBD, 0xE2, 0x80, 0x41, 0xC3, 0xA9, 0xFF, 0xF0, 0x9F, 0x00]), max_size=12
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.binary(max_size=40), _tricky.map(bytes)))
def test_binary_exactly_when_not_utf8(body: bytes) -> None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    else:
        valid = True
    assert (Payload.from_bytes(body).kind is not Kind.BINARY) is valid


@pytest.mark.parametrize(
    "body", [b'{"a": 1}', b"[1, 2]", b"plain text", "gr\u00fc\u00df".encode(), b"\xff\xfe\x00", b""]
)
def test_raw_payloads_are_classified_on_demand_as_from_bytes_does(body: bytes) -> None:
    payload = Payload.raw(body)
    assert payload.known_kind is None  # MQTT to MQTT never asks
    assert payload.kind is Payload.from_bytes(body).kind
    assert payload.known_kind is payload.kind  # asked once
