"""Tables of bytes for the PROXY protocol reader, and of headers for the trusted-proxy rules; no sockets."""

from __future__ import annotations

import socket
import struct

import pytest

from gateway.proxies import Hop, TrustedProxies, forwarded_for
from protocols.mqtt.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
)

CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


V2_TCP4 = v2(
    0x1, 0x11, socket.inet_aton("198.51.100.7") + socket.inet_aton("10.0.0.1") + struct.pack("!HH", 5555, 1883)
)
V2_TCP6 = v2(
    0x1,
    0x21,
    socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    + struct.pack("!HH", 443, 8883),
)
V2_WITH_TLV = v2(0x1, 0x11, V2_TCP4[16:] + b"\x01\x00\x02h2")  # PP2_TYPE_ALPN after the addresses

GOOD = [
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 1883\r\n", ProxyHeader(1, ("198.51.100.7", 5555), ("10.0.0.1", 1883))),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 443 8883\r\n", ProxyHeader(1, ("2001:db8::7", 443), ("2001:db8::1", 8883))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, None)),
    (V2_TCP4, ProxyHeader(2, ("198.51.100.7", 5555), ("10.0.0.1", 1883))),
    (V2_TCP6, ProxyHeader(2, ("2001:db8::7", 443), ("2001:db8::1", 8883))),
    (V2_WITH_TLV, ProxyHeader(2, ("198.51.100.7", 5555), ("10.0.0.1", 1883))),
    (v2(0x0, 0x00, b""), ProxyHeader(2, None)),  # LOCAL: the balancer's own health check
    (v2(0x1, 0x00, b""), ProxyHeader(2, None)),  # UNSPEC
    (v2(0x1, 0x31, b"\x00" * 216), ProxyHeader(2, None)),  # AF_UNIX
]

BAD = [
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 5555\r\n", "malformed"),
    (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "malformed"),
    (b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n", "IPv4"),
    (b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "IPv6"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n", "port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n", "port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.5 -1 2\r\n", "port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\xff\r\n", "ASCII"),
    (b"PROXY " + b"A" * 120, "CRLF"),
    (V2_SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12) + b"\x00" * 12, "version"),
    (v2(0x2, 0x11, b"\x00" * 12), "command"),
    (v2(0x1, 0x11, b"\x00" * 11), "need 12 bytes"),
    (v2(0x1, 0x21, b"\x00" * 12), "need 36 bytes"),
    (v2(0x1, 0x41, b""), "address family"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "at most"),
]


@pytest.mark.parametrize(("data", "expected"), GOOD)
def test_headers_in_one_piece_and_byte_by_byte(data: bytes, expected: ProxyHeader) -> None:
    assert ProxyHeaderReader().feed(data + CONNECT) == (expected, CONNECT)
    reader = ProxyHeaderReader()
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == (expected, b"")


@pytest.mark.parametrize(("data", "error"), BAD)
def test_malformed_headers_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ProxyProtocolError, match=error):
        ProxyHeaderReader().feed(data)


@pytest.mark.parametrize(
    ("data", "decided_at"), [(CONNECT, 1), (b"PROXX", 5), (b"PROX\x10", 5), (b"\r\n\r\n\x00\r\nQUIX\n", 11)]
)
def test_a_stream_without_a_header_is_handed_on_unchanged(data: bytes, decided_at: int) -> None:
    assert ProxyHeaderReader().feed(data) == (None, data)
    reader = ProxyHeaderReader()
    results = [reader.feed(data[i : i + 1]) for i in range(decided_at)]
    assert results == [None] * (decided_at - 1) + [(None, data[:decided_at])]  # MQTT gets every byte


PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:ff::/48", "127.0.0.1"])

CLIENTS = [
    # peer, Forwarded, X-Forwarded-For, client
    ("10.1.2.3", None, "203.0.113.5", Hop("203.0.113.5", 0)),
    ("10.1.2.3", None, "198.51.100.1, 203.0.113.5", Hop("203.0.113.5", 0)),  # what the client wrote is left of it
    ("10.1.2.3", None, "203.0.113.5, 10.9.9.9", Hop("203.0.113.5", 0)),  # through two trusted proxies
    ("10.1.2.3", None, "10.8.8.8, 10.9.9.9", Hop("10.8.8.8", 0)),  # all trusted: the farthest
    ("10.1.2.3", None, None, None),
    (
        "10.1.2.3",
        "for=192.0.2.60;proto=https;by=10.1.2.3",
        "203.0.113.5",
        Hop("192.0.2.60", 0, "https"),
    ),  # Forwarded wins
    ("10.1.2.3", 'for="[2001:db8:cafe::17]:4711"', None, Hop("2001:db8:cafe::17", 4711)),
    ("10.1.2.3", "for=192.0.2.43:80, for=10.3.3.3", None, Hop("192.0.2.43", 80)),
    ("10.1.2.3", 'for="_hidden", for=10.3.3.3', None, Hop("_hidden", 0)),
    ("10.1.2.3", "proto=https", None, Hop("unknown", 0, "https")),
    ("::ffff:10.1.2.3", None, "203.0.113.5", Hop("203.0.113.5", 0)),  # IPv4-mapped peer
    ("2001:db8:ff::1", None, "2001:db8::5", Hop("2001:db8::5", 0)),
    ("203.0.113.9", None, "198.51.100.1", None),  # untrusted peer: its claim is ignored
    ("203.0.113.9", "for=198.51.100.1", None, None),
    ("127.0.0.2", None, "198.51.100.1", None),
]


@pytest.mark.parametrize(("peer", "forwarded", "xff", "client"), CLIENTS)
def test_client_behind_proxies(peer: str, forwarded: str | None, xff: str | None, client: Hop | None) -> None:
    assert PROXIES.client(peer, forwarded, xff) == client


def test_forwarded_keeps_quoted_separators() -> None:
    assert forwarded_for('for="a,b;c";proto=HTTP, for=1.2.3.4') == [Hop("a,b;c", 0, "http"), Hop("1.2.3.4")]
    assert not TrustedProxies([])
    assert not PROXIES.trusts("not-an-address")


@pytest.mark.parametrize(("data", "expected"), GOOD)
def test_reading_what_it_wants_never_reads_past_the_header(data: bytes, expected: ProxyHeader) -> None:
    """How the TLS listener reads a header in front of a handshake: ``wanted()`` bytes at a time."""
    stream, reader, result = data + b"\x16\x03\x01", ProxyHeaderReader(), None
    while result is None:
        chunk, stream = stream[: reader.wanted()], stream[reader.wanted() :]
        result = reader.feed(chunk)
    assert result == (expected, b"") and stream == b"\x16\x03\x01"
