"""The PROXY protocol (HAProxy's, v1 text and v2 binary), read from the start of a TCP stream; no I/O.

A load balancer that passes TCP through (HAProxy ``send-proxy``, AWS NLB,
Google and Azure load balancers) puts one header before the client's bytes
naming the client's address. ``ProxyHeaderReader.feed`` takes bytes as they
arrive and returns None while it needs more, then ``(header, rest)``: the
header (None if the stream does not start with one: a proxy's own health
check, or a direct client) and the bytes after it, which belong to MQTT. A
malformed header raises ``ProxyProtocolError``; the caller closes the
connection. The listener only uses this for peers in
``FLOWGATE_TRUSTED_PROXIES``: from anyone else a PROXY header is just bytes
that are not MQTT.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LINE = 107  # "the maximum line lengths the receiver must support including the CRLF" (2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
V2_MAX_BODY = 4096  # addresses plus TLVs (ALPN, authority, SSL info); real headers are far smaller

_V2_ADDRESS_BYTES = {0x1: 12, 0x2: 36}  # AF_INET, AF_INET6: two addresses and two ports


class ProxyProtocolError(ValueError):
    """The stream starts with a PROXY header that breaks the spec."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    source: tuple[str, int] | None  # the client; None for LOCAL (v2) or UNKNOWN (v1): keep the peer's address
    destination: tuple[str, int] | None = None


class ProxyHeaderReader:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def wanted(self) -> int:
        """Bytes the header surely still has (1 while a v1 line is open): reading no more never reads past it."""
        buffer = self._buffer
        if buffer.startswith(V2_SIGNATURE) and len(buffer) >= V2_HEADER:
            return max(1, V2_HEADER + int.from_bytes(buffer[14:16], "big") - len(buffer))
        if buffer and V2_SIGNATURE.startswith(buffer[:12]) and not buffer.startswith(b"P"):
            return V2_HEADER - len(buffer)
        return 1

    def feed(self, data: bytes) -> tuple[ProxyHeader | None, bytes] | None:
        buffer = self._buffer = self._buffer + data
        if buffer.startswith(V2_SIGNATURE):
            return self._v2(buffer)
        if buffer.startswith(V1_PREFIX):
            return self._v1(buffer)
        if V2_SIGNATURE.startswith(buffer) or V1_PREFIX.startswith(buffer):
            return None  # a header may still follow
        self._buffer = b""
        return None, buffer

    def _v1(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        end = buffer.find(b"\r\n", 0, V1_MAX_LINE)
        if end < 0:
            if len(buffer) >= V1_MAX_LINE:
                raise ProxyProtocolError(f"PROXY v1 line without CRLF in its first {V1_MAX_LINE} bytes")
            return None
        self._buffer = b""
        return parse_v1(buffer[:end]), buffer[end + 2 :]

    def _v2(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        if len(buffer) < V2_HEADER:
            return None
        length = int.from_bytes(buffer[14:16], "big")
        if length > V2_MAX_BODY:
            raise ProxyProtocolError(f"PROXY v2 header of {length} bytes (at most {V2_MAX_BODY})")
        if len(buffer) < V2_HEADER + length:
            return None
        self._buffer = b""
        return parse_v2(buffer[12], buffer[13], buffer[V2_HEADER : V2_HEADER + length]), buffer[V2_HEADER + length :]


def parse_v1(line: bytes) -> ProxyHeader:
    """``PROXY TCP4 <src> <dst> <sport> <dport>``, ``PROXY TCP6 ...`` or ``PROXY UNKNOWN ...`` (no CRLF)."""
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(1, None)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line[:V1_MAX_LINE]!r}")
    version = 4 if words[1] == "TCP4" else 6
    source = _v1_address(words[2], words[4], version)
    destination = _v1_address(words[3], words[5], version)
    return ProxyHeader(1, source, destination)


def _v1_address(host: str, port: str, version: int) -> tuple[str, int]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 address {host!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {host!r} is not an IPv{version} address")
    if not port.isdigit() or (len(port) > 1 and port[0] == "0") or int(port) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {port!r} is not 0-65535")
    return str(address), int(port)


def parse_v2(version_command: int, family: int, body: bytes) -> ProxyHeader:
    """The 13th and 14th bytes of a v2 header and what follows its length field."""
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command == 0x0:  # LOCAL: the proxy's own connection (health check); the addresses are ignored
        return ProxyHeader(2, None)
    if command != 0x1:
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command:#x}")
    address_family = family >> 4
    if address_family in (0x0, 0x3):
        return ProxyHeader(2, None)  # UNSPEC or a Unix socket: nothing usable as a client address
    needed = _V2_ADDRESS_BYTES.get(address_family)
    if needed is None:
        raise ProxyProtocolError(f"PROXY v2 header with unknown address family {address_family:#x}")
    if len(body) < needed:
        raise ProxyProtocolError(f"PROXY v2 addresses need {needed} bytes, the header has {len(body)}")
    size = 4 if address_family == 0x1 else 16
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size : 2 * size])
    sport = int.from_bytes(body[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(body[2 * size + 2 : 2 * size + 4], "big")
    return ProxyHeader(2, (str(src), sport), (str(dst), dport))
